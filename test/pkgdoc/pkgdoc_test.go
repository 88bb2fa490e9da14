// Package pkgdoc checks that every package in the module has a doc
// comment saying what it is for.
package pkgdoc

import (
	"os/exec"
	"strings"
	"testing"
)

func TestEveryPackageHasDoc(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{len .GoFiles}}\t{{.Doc}}", "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, rest, _ := strings.Cut(line, "\t")
		files, doc, _ := strings.Cut(rest, "\t")
		if files == "0" {
			continue // test-only packages document themselves in their tests
		}
		n++
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no doc comment", pkg)
		}
	}
	if n < 20 {
		t.Fatalf("go list found only %d packages", n)
	}
}
