package image_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/imagetest"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newStore(t testing.TB) *image.Store {
	t.Helper()
	s, err := image.Open(filepath.Join(t.TempDir(), "images"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// debugfs runs a read-only debugfs request against an ext4 image.
func debugfs(t testing.TB, disk, request string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", request, disk).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q %s: %v\n%s (apt-get install e2fsprogs)", request, disk, err, out)
	}
	return string(out)
}

// checkEmpty fails unless the store holds no temp dirs or build locks.
func checkClean(t testing.TB, s *image.Store) {
	t.Helper()
	for _, d := range []string{"tmp", "locks"} {
		ents, err := os.ReadDir(filepath.Join(s.Dir(), d))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			t.Errorf("left behind: %s/%s", d, e.Name())
		}
	}
}

var fullOptions = imagetest.Options{
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{"echo hello"},
	Env:        []string{"PATH=/usr/bin:/bin", "GREETING=hi there"},
	WorkingDir: "/home/app",
	User:       "app",
	StopSignal: "SIGINT",
	Labels:     map[string]string{"org.example": "yes"},
	Ports:      []string{"8080/tcp", "53/udp"},
	ExtraFiles: map[string]string{"/srv/www/index.html": "<h1>hi</h1>\n"},
}

var fullConfig = image.Config{
	Entrypoint:   []string{"/bin/sh", "-c"},
	Cmd:          []string{"echo hello"},
	Env:          []string{"PATH=/usr/bin:/bin", "GREETING=hi there"},
	WorkingDir:   "/home/app",
	User:         "app",
	StopSignal:   "SIGINT",
	ExposedPorts: []string{"53/udp", "8080/tcp"},
	Labels:       map[string]string{"org.example": "yes"},
}

// checkDisk asserts the busybox image's files are really in the ext4 disk.
func checkDisk(t testing.TB, img *image.Image) {
	t.Helper()
	fi, err := os.Stat(img.Disk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("disk mode %v, want read-only 0444", fi.Mode())
	}
	if fi.Size() != img.Size {
		t.Errorf("disk size %d, Image.Size %d", fi.Size(), img.Size)
	}
	if out, err := exec.Command("e2fsck", "-fn", img.Disk).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", img.Disk, err, out)
	}
	if got := debugfs(t, img.Disk, "stats"); !strings.Contains(got, "Filesystem volume name:   fcvm-") || strings.Contains(got, "has_journal") {
		t.Errorf("disk label or features:\n%s", got)
	}
	bin := debugfs(t, img.Disk, "ls -l /bin")
	for _, want := range []string{"busybox", "sh", "cat", "echo", "sleep", "ls", "true", "false"} {
		if !strings.Contains(bin, " "+want+"\n") && !strings.Contains(bin, " "+want+" ") {
			t.Errorf("/bin in the disk lacks %s:\n%s", want, bin)
		}
	}
	if got := debugfs(t, img.Disk, "cat /etc/passwd"); !strings.Contains(got, "app:x:1000:1000:app:/home/app:/bin/sh") {
		t.Errorf("/etc/passwd in the disk:\n%s", got)
	}
	if got := debugfs(t, img.Disk, "cat /srv/www/index.html"); !strings.Contains(got, "<h1>hi</h1>") {
		t.Errorf("/srv/www/index.html in the disk:\n%s", got)
	}
	// Symlink targets, ownership and modes survive.
	if got := debugfs(t, img.Disk, "stat /bin/sh"); !strings.Contains(got, `Fast link dest: "/bin/busybox"`) {
		t.Errorf("/bin/sh is not a symlink to /bin/busybox:\n%s", got)
	}
	if got := debugfs(t, img.Disk, "stat /home/app"); !strings.Contains(got, "User:  1000") || !strings.Contains(got, "Group:  1000") {
		t.Errorf("/home/app not owned by 1000:1000:\n%s", got)
	}
	if got := debugfs(t, img.Disk, "stat /tmp"); !strings.Contains(got, "Mode:  01777") {
		t.Errorf("/tmp mode not 01777:\n%s", got)
	}
	if got := debugfs(t, img.Disk, "stat /bin/busybox"); !strings.Contains(got, "Mode:  0755") || !strings.Contains(got, "User:     0") {
		t.Errorf("/bin/busybox not 0755 root:\n%s", got)
	}
	root := debugfs(t, img.Disk, "ls -l /")
	for _, mp := range []string{"etc", "dev", "proc", "sys", "tmp", "run"} {
		if !strings.Contains(root, " "+mp+"\n") && !strings.Contains(root, " "+mp+" ") {
			t.Errorf("mount point /%s missing:\n%s", mp, root)
		}
	}
}

func TestPullRegistry(t *testing.T) {
	addr := imagetest.StartRegistry(t)
	src := imagetest.Busybox(t, fullOptions)
	imagetest.Push(t, src, addr+"/test/busybox:1")
	s := newStore(t)
	ctx := context.Background()

	var progress strings.Builder
	opts := image.DefaultPullOptions()
	opts.Progress = &progress
	img, err := s.Pull(ctx, addr+"/test/busybox:1", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("progress:\n%s", progress.String())
	if img.ID != imagetest.ID(t, src) {
		t.Errorf("ID %s, want the config digest %s", img.ID, imagetest.ID(t, src))
	}
	if diff := cmp.Diff([]string{addr + "/test/busybox:1"}, img.Refs); diff != "" {
		t.Errorf("Refs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(fullConfig, img.Config); diff != "" {
		t.Errorf("Config (-want +got):\n%s", diff)
	}
	if !img.Created.Equal(img.Created.UTC()) || img.Created.Year() != 2024 {
		t.Errorf("Created %v, want the image's 2024-01-01", img.Created)
	}
	if !strings.HasPrefix(img.Digest, "sha256:") {
		t.Errorf("Digest %q", img.Digest)
	}
	checkDisk(t, img)
	checkClean(t, s)

	// A second pull is a cache hit: the same disk file, untouched.
	before, _ := os.Stat(img.Disk)
	again, err := s.Pull(ctx, "docker://"+addr+"/test/busybox:1", image.DefaultPullOptions())
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(again.Disk)
	if again.ID != img.ID || !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Errorf("second pull rebuilt the disk")
	}

	// Lookup by name, full ID and short ID, no network needed.
	for _, q := range []string{addr + "/test/busybox:1", img.ID, strings.TrimPrefix(img.ID, "sha256:")[:12]} {
		got, err := s.Lookup(q)
		if err != nil {
			t.Errorf("Lookup(%q): %v", q, err)
			continue
		}
		if diff := cmp.Diff(img, got); diff != "" {
			t.Errorf("Lookup(%q) (-pulled +got):\n%s", q, diff)
		}
	}

	// Ensure takes a bare hex string for a cached image's ID, as podman
	// does, and never asks a registry: the context is already cancelled,
	// so a pull (of docker.io/library/<hex>) would fail.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, q := range []string{strings.TrimPrefix(img.ID, "sha256:")[:12], strings.TrimPrefix(img.ID, "sha256:"), img.ID} {
		got, err := s.Ensure(cancelled, q, image.DefaultPullOptions())
		if err != nil || got.ID != img.ID {
			t.Errorf("Ensure(%q) of a cached ID: %v, %v; want the cached image", q, got, err)
		}
	}

	// Ensure finds it locally; a new tag of the same image is pulled and
	// shares the disk.
	imagetest.Push(t, src, addr+"/test/other:latest")
	e, err := s.Ensure(ctx, addr+"/test/other", image.DefaultPullOptions())
	if err != nil {
		t.Fatal(err)
	}
	if e.Disk != img.Disk {
		t.Errorf("same image under another name got another disk: %s vs %s", e.Disk, img.Disk)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || len(list[0].Refs) != 2 {
		t.Errorf("List: %+v, want one image with two names", list)
	}
}

func TestPullLocalTransports(t *testing.T) {
	src := imagetest.Busybox(t, fullOptions)
	want := imagetest.ID(t, src)
	dir := t.TempDir()
	imagetest.WriteOCIArchive(t, src, filepath.Join(dir, "plain.tar"))
	imagetest.WriteOCIArchiveNamed(t, src, filepath.Join(dir, "named.tar"), "localhost/test/named:2")
	imagetest.WriteOCILayout(t, src, filepath.Join(dir, "layout"), "latest")
	imagetest.WriteDockerArchive(t, src, filepath.Join(dir, "docker.tar"), "localhost/test/busybox:1")

	for _, tc := range []struct {
		ref      string
		wantRefs []string
	}{
		{"oci-archive:" + dir + "/plain.tar", nil},
		{"oci-archive:" + dir + "/named.tar", []string{"localhost/test/named:2"}},
		{"oci-archive:" + dir + "/named.tar:localhost/test/named:2", []string{"localhost/test/named:2"}},
		{"oci:" + dir + "/layout", nil},
		{"oci:" + dir + "/layout:latest", nil},
		{"docker-archive:" + dir + "/docker.tar", []string{"localhost/test/busybox:1"}},
		{"docker-archive:" + dir + "/docker.tar:localhost/test/busybox:1", []string{"localhost/test/busybox:1"}},
	} {
		t.Run(strings.ReplaceAll(strings.TrimPrefix(tc.ref, dir), "/", "_"), func(t *testing.T) {
			s := newStore(t)
			img, err := s.Pull(context.Background(), tc.ref, image.DefaultPullOptions())
			if err != nil {
				t.Fatal(err)
			}
			if img.ID != want {
				t.Errorf("ID %s, want %s", img.ID, want)
			}
			if diff := cmp.Diff(tc.wantRefs, img.Refs); diff != "" {
				t.Errorf("Refs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(fullConfig, img.Config); diff != "" {
				t.Errorf("Config (-want +got):\n%s", diff)
			}
			checkDisk(t, img)
			checkClean(t, s)
			// Ensure reads the archive again but does not rebuild.
			before, _ := os.Stat(img.Disk)
			again, err := s.Ensure(context.Background(), tc.ref, image.DefaultPullOptions())
			if err != nil {
				t.Fatal(err)
			}
			after, _ := os.Stat(again.Disk)
			if !os.SameFile(before, after) {
				t.Error("Ensure rebuilt the disk")
			}
		})
	}
}

func TestPullConcurrent(t *testing.T) {
	addr := imagetest.StartRegistry(t)
	src := imagetest.Busybox(t, imagetest.Options{})
	imagetest.Push(t, src, addr+"/test/busybox:1")
	dir := filepath.Join(t.TempDir(), "images")
	const n = 4
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		// Separate Stores on one directory, as separate fcvm processes.
		s, err := image.Open(dir, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			img, err := s.Pull(context.Background(), addr+"/test/busybox:1", image.DefaultPullOptions())
			errs[i] = err
			if err == nil {
				ids[i] = img.ID
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("pull %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("pull %d got %s, pull 0 %s", i, ids[i], ids[0])
		}
	}
	s, _ := image.Open(dir, testLogger(t))
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Errorf("%d images after concurrent pulls of one, want 1", len(list))
	}
	checkClean(t, s)
}

func TestRemovePrune(t *testing.T) {
	addr := imagetest.StartRegistry(t)
	a := imagetest.Busybox(t, imagetest.Options{})
	b := imagetest.Busybox(t, imagetest.Options{Cmd: []string{"true"}})
	imagetest.Push(t, a, addr+"/test/a:1")
	imagetest.Push(t, a, addr+"/test/a:2")
	imagetest.Push(t, b, addr+"/test/b:1")
	archive := filepath.Join(t.TempDir(), "b.tar")
	imagetest.WriteOCIArchive(t, b, archive)
	s := newStore(t)
	ctx := context.Background()
	pull := func(ref string) *image.Image {
		t.Helper()
		img, err := s.Pull(ctx, ref, image.DefaultPullOptions())
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	ia := pull(addr + "/test/a:1")
	pull(addr + "/test/a:2")
	dangling := pull("oci-archive:" + archive)

	// Removing one of two names keeps the image.
	if err := s.Remove(addr + "/test/a:1"); err != nil {
		t.Fatal(err)
	}
	if img, err := s.Lookup(ia.ID); err != nil || len(img.Refs) != 1 {
		t.Fatalf("after removing one name: %+v, %v", img, err)
	}
	if _, err := s.Lookup(addr + "/test/a:1"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("removed name still found: %v", err)
	}

	// In use: refused.
	s.InUse = func(id string) bool { return id == ia.ID || id == dangling.ID }
	err := s.Remove(addr + "/test/a:2")
	if !errors.Is(err, image.ErrInUse) {
		t.Fatalf("Remove of an image in use: %v, want ErrInUse", err)
	}
	t.Logf("in use: %v", err)
	if removed, err := s.Prune(); err != nil || len(removed) != 0 {
		t.Fatalf("Prune with everything in use removed %v, %v", removed, err)
	}
	s.InUse = nil

	// Prune removes the unnamed image only.
	removed, err := s.Prune()
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].ID != dangling.ID {
		t.Errorf("Prune removed %+v, want the archive's unnamed image", removed)
	}
	if _, err := os.Stat(filepath.Dir(dangling.Disk)); !os.IsNotExist(err) {
		t.Errorf("pruned image's dir still there: %v", err)
	}

	// Removing the last name removes the image and its disk.
	if err := s.Remove(addr + "/test/a:2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ia.Disk); !os.IsNotExist(err) {
		t.Errorf("disk still there after the last name was removed: %v", err)
	}
	// By ID, with names: all go.
	ib := pull(addr + "/test/b:1")
	if err := s.Remove(strings.TrimPrefix(ib.ID, "sha256:")[:10]); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 0 {
		t.Errorf("List after removing everything: %+v, %v", list, err)
	}
	if err := s.Remove("sha256:" + strings.Repeat("0", 64)); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("Remove of an unknown ID: %v, want ErrNotFound", err)
	}
	checkClean(t, s)
}

func TestPruneAll(t *testing.T) {
	src := imagetest.Busybox(t, imagetest.Options{})
	archive := filepath.Join(t.TempDir(), "a.tar")
	imagetest.WriteDockerArchive(t, src, archive, "localhost/a:1")
	s := newStore(t)
	if _, err := s.Pull(context.Background(), "docker-archive:"+archive, image.DefaultPullOptions()); err != nil {
		t.Fatal(err)
	}
	// A crashed pull's temp dir: its lock is free.
	if err := os.MkdirAll(filepath.Join(s.Dir(), "tmp", "abc-123", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.Prune(); err != nil || len(removed) != 0 {
		t.Errorf("Prune removed a named image: %v, %v", removed, err)
	}
	checkClean(t, s)
	removed, err := s.PruneAll()
	if err != nil || len(removed) != 1 {
		t.Errorf("PruneAll: %v, %v", removed, err)
	}
	if _, err := s.Lookup("localhost/a:1"); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("pruned name still found: %v", err)
	}
}
