package image_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/imagetest"
)

// TestPullContainersStorage reads an image from podman's storage: a
// private one (CONTAINERS_STORAGE_CONF), so the host's images are untouched.
func TestPullContainersStorage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman not found: apt-get install podman")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "storage.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(dir, "graph"), filepath.Join(dir, "run")), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONTAINERS_STORAGE_CONF", conf)
	src := imagetest.Busybox(t, fullOptions)
	archive := filepath.Join(dir, "img.tar")
	imagetest.WriteDockerArchive(t, src, archive, "localhost/test/busybox:1")
	t0 := time.Now()
	defer func() { t.Logf("took %v", time.Since(t0)) }()
	if out, err := exec.Command("podman", "load", "-q", "-i", archive).CombinedOutput(); err != nil {
		t.Fatalf("podman load: %v\n%s", err, out)
	}

	t.Logf("podman load: %v", time.Since(t0))
	s := newStore(t)
	img, err := s.Pull(context.Background(), "containers-storage:localhost/test/busybox:1", image.DefaultPullOptions())
	if err != nil {
		t.Fatal(err)
	}
	// podman rewrites the config on load, so its ID is podman's.
	out, err := exec.Command("podman", "image", "inspect", "--format", "{{.Id}}", "localhost/test/busybox:1").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "sha256:" + strings.TrimSpace(string(out)); img.ID != want {
		t.Errorf("ID %s, want podman's %s", img.ID, want)
	}
	if diff := cmp.Diff(fullConfig, img.Config); diff != "" {
		t.Errorf("Config (-want +got):\n%s", diff)
	}
	if len(img.Refs) != 1 || img.Refs[0] != "localhost/test/busybox:1" {
		t.Errorf("Refs %v", img.Refs)
	}
	checkDisk(t, img)
	checkClean(t, s)

	_, err = s.Pull(context.Background(), "containers-storage:localhost/test/nosuch:1", image.DefaultPullOptions())
	if !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("unknown podman image: %v, want ErrNotFound", err)
	}
	t.Logf("unknown podman image: %v", err)
	checkClean(t, s)
}
