package fusepipe

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSmoke(t *testing.T) {
	s := newShare(t, shareOpts{})
	p := filepath.Join(s.mnt, "a")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "a"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("host sees %q, %v", b, err)
	}
	ents, err := os.ReadDir(s.mnt)
	if err != nil || len(ents) != 1 {
		t.Fatalf("readdir %v %v", ents, err)
	}
}
