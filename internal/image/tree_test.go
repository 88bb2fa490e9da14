package image_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFromTree(t *testing.T) {
	s := newStore(t)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "app"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	img, err := s.FromTree(ctx, "layers-a", root)
	if err != nil {
		t.Fatal(err)
	}
	if got := debugfs(t, img.Disk, "stat /bin/app"); !strings.Contains(got, "Mode:  0755") {
		t.Errorf("/bin/app on the disk:\n%s", got)
	}
	// The same key is the cached disk, whatever the tree holds now.
	if err := os.WriteFile(filepath.Join(root, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := s.FromTree(ctx, "layers-a", root)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != img.ID || again.Disk != img.Disk {
		t.Errorf("same key: %s at %s, then %s at %s", img.ID, img.Disk, again.ID, again.Disk)
	}
	if got := debugfs(t, again.Disk, "ls /"); strings.Contains(got, "new") {
		t.Errorf("cached disk was rebuilt: %s", got)
	}
	other, err := s.FromTree(ctx, "layers-b", root)
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == img.ID {
		t.Errorf("another key gave the same image %s", other.ID)
	}
	if got := debugfs(t, other.Disk, "ls /"); !strings.Contains(got, "new") {
		t.Errorf("disk of the second key lacks the new file: %s", got)
	}
	if _, err := s.FromTree(ctx, "layers-c", filepath.Join(root, "missing")); err == nil {
		t.Error("a missing tree built a disk")
	}
	checkClean(t, s)
}
