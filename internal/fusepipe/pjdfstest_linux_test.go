//go:build pjdfstest

package fusepipe

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestPjdfstest runs an external POSIX suite, pjdfstest
// (github.com/pjd/pjdfstest), on a local directory and on a mount and
// requires every check that passes locally to pass on the mount. It is
// slow (minutes each) and needs a built tree that CI cannot fetch, so it
// is built only with the pjdfstest tag, and then fails unless
// FUSEPIPE_PJDFSTEST names the tree (the directory holding the pjdfstest
// binary and tests/):
//
//	FUSEPIPE_PJDFSTEST=/path/to/pjdfstest go test -tags pjdfstest -run Pjdfstest ./internal/fusepipe
func TestPjdfstest(t *testing.T) {
	tree := os.Getenv("FUSEPIPE_PJDFSTEST")
	if tree == "" {
		t.Fatal("FUSEPIPE_PJDFSTEST is not set: point it at a built pjdfstest tree")
	}
	if _, err := exec.LookPath("prove"); err != nil {
		t.Fatal("prove(1) not found: install perl")
	}
	local, _ := pjdFailures(t, worldDir(t), filepath.Join(tree, "tests"))
	s := newShare(t, shareOpts{worldReadable: true})
	mount, total := pjdFailures(t, s.mnt, filepath.Join(tree, "tests"))
	var failed int
	for file, fails := range mount {
		for n := range fails {
			failed++
			if !local[file][n] {
				t.Errorf("%s check %d fails on the mount only", file, n)
			}
		}
	}
	t.Logf("pjdfstest: %d checks, %d fail on the mount, %d on a local directory", total, failed, countFails(local))
	noHostPrivilege(t, s.dir)
}

func countFails(m map[string]map[int]bool) (n int) {
	for _, f := range m {
		n += len(f)
	}
	return n
}

var (
	pjdFile   = regexp.MustCompile(`^(\S+\.t)\s+\(Wstat`)
	pjdFailed = regexp.MustCompile(`^\s+Failed tests?:\s+(.*)$`)
	pjdMore   = regexp.MustCompile(`^\s+([\d, -]+)$`)
	pjdTests  = regexp.MustCompile(`Tests=(\d+)`)
)

// pjdFailures runs the suite in dir and returns the failed checks per
// test file and the number of checks.
func pjdFailures(t *testing.T, dir, tests string) (fails map[string]map[int]bool, total int) {
	t.Helper()
	cmd := exec.Command("prove", "-r", tests)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput() // prove exits non-zero when anything fails
	fails = map[string]map[int]bool{}
	var file string
	inFailed := false
	for _, line := range strings.Split(string(out), "\n") {
		if m := pjdTests.FindStringSubmatch(line); m != nil {
			total, _ = strconv.Atoi(m[1])
		}
		if m := pjdFile.FindStringSubmatch(line); m != nil {
			file, inFailed = filepath.Base(filepath.Dir(m[1]))+"/"+filepath.Base(m[1]), false
			continue
		}
		var ranges string
		if m := pjdFailed.FindStringSubmatch(line); m != nil {
			ranges, inFailed = m[1], true
		} else if m := pjdMore.FindStringSubmatch(line); m != nil && inFailed {
			ranges = m[1]
		} else {
			inFailed = false
			continue
		}
		for _, r := range strings.Split(ranges, ",") {
			lo, hi, _ := strings.Cut(strings.TrimSpace(r), "-")
			a, err := strconv.Atoi(lo)
			if err != nil {
				continue
			}
			b := a
			if hi != "" {
				b, _ = strconv.Atoi(hi)
			}
			if fails[file] == nil {
				fails[file] = map[int]bool{}
			}
			for n := a; n <= b; n++ {
				fails[file][n] = true
			}
		}
	}
	if total == 0 {
		t.Fatalf("prove in %s: no summary:\n%s", dir, out)
	}
	return fails, total
}
