package image_test

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/imagetest"
)

// TestLayers checks what flattening keeps and drops: whiteouts, opaque
// directories, hardlinks, device nodes, xattrs, and entries that try to
// reach outside the root.
func TestLayers(t *testing.T) {
	host := t.TempDir() // stands for a host directory an image must not reach
	if err := os.WriteFile(filepath.Join(host, "secret"), []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lower := imagetest.Layer(t,
		imagetest.Entry{Name: "data/", Type: tar.TypeDir},
		imagetest.Entry{Name: "data/gone", Body: "deleted above\n"},
		imagetest.Entry{Name: "data/kept", Body: "kept\n"},
		imagetest.Entry{Name: "opaque/", Type: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000},
		imagetest.Entry{Name: "opaque/old", Body: "hidden by an opaque dir\n"},
		imagetest.Entry{Name: "escape", Type: tar.TypeSymlink, Linkname: host},
		imagetest.Entry{Name: "dev/", Type: tar.TypeDir},
		imagetest.Entry{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		imagetest.Entry{Name: "dev/fifo", Type: tar.TypeFifo, Mode: 0o600},
		imagetest.Entry{Name: "bin/ping", Mode: 0o4755, Body: "setuid\n", Xattrs: map[string]string{"user.fcvm": "x"}},
		imagetest.Entry{Name: "data/hard", Type: tar.TypeLink, Linkname: "data/kept"},
	)
	upper := imagetest.Layer(t,
		imagetest.Entry{Name: "data/.wh.gone"},
		imagetest.Entry{Name: "opaque/", Type: tar.TypeDir, Mode: 0o755},
		imagetest.Entry{Name: "opaque/.wh..wh..opq"},
		imagetest.Entry{Name: "opaque/new", Body: "new\n"},
		// Through the lower layer's symlink to the host: must not land there.
		imagetest.Entry{Name: "escape/planted", Body: "planted\n"},
		imagetest.Entry{Name: "stolen", Type: tar.TypeLink, Linkname: "escape/secret"},
		imagetest.Entry{Name: "link2", Type: tar.TypeSymlink, Linkname: "../../../../etc/passwd"},
	)
	src := imagetest.Busybox(t, imagetest.Options{ExtraLayers: []v1.Layer{lower, upper}})
	archive := filepath.Join(t.TempDir(), "img.tar")
	imagetest.WriteOCIArchive(t, src, archive)
	s := newStore(t)
	img, err := s.Pull(context.Background(), "oci-archive:"+archive, image.DefaultPullOptions())
	if err != nil {
		t.Fatal(err)
	}
	disk := img.Disk

	data := debugfs(t, disk, "ls /data")
	if strings.Contains(data, "gone") || !strings.Contains(data, "kept") {
		t.Errorf("whiteout not applied: /data holds\n%s", data)
	}
	opq := debugfs(t, disk, "ls /opaque")
	if strings.Contains(opq, "old") || !strings.Contains(opq, "new") {
		t.Errorf("opaque dir not applied: /opaque holds\n%s", opq)
	}
	if got := debugfs(t, disk, "stat /opaque"); !strings.Contains(got, "Mode:  0755") || !strings.Contains(got, "User:     0") {
		t.Errorf("/opaque should have the upper layer's 0755 root:\n%s", got)
	}
	if got := debugfs(t, disk, "stat /data/hard"); !strings.Contains(got, "Links: 2") {
		t.Errorf("hardlink not kept:\n%s", got)
	}
	if got := debugfs(t, disk, "stat /dev/null"); !strings.Contains(got, "Type: character special") || !strings.Contains(got, "Device major/minor number: 01:03") {
		t.Errorf("/dev/null not a 1:3 char device:\n%s", got)
	}
	if got := debugfs(t, disk, "stat /dev/fifo"); !strings.Contains(got, "Type: FIFO") {
		t.Errorf("/dev/fifo not a FIFO:\n%s", got)
	}
	if got := debugfs(t, disk, "stat /bin/ping"); !strings.Contains(got, "Mode:  04755") {
		t.Errorf("setuid bit lost:\n%s", got)
	}
	if got := debugfs(t, disk, "ea_get /bin/ping user.fcvm"); !strings.Contains(got, "x") {
		t.Errorf("xattr lost: %s", got)
	}
	// Nothing reached the host, and no host file came into the image.
	if _, err := os.Stat(filepath.Join(host, "planted")); err == nil {
		t.Fatal("a layer wrote through a symlink onto the host")
	}
	if got := debugfs(t, disk, "cat /stolen"); strings.Contains(got, "host secret") {
		t.Fatal("a hardlink through a symlink copied a host file into the image")
	}
	// The upper layer's escape/planted wins over the lower symlink as a
	// directory inside the image.
	if got := debugfs(t, disk, "cat /escape/planted"); !strings.Contains(got, "planted") {
		t.Errorf("/escape/planted: %s", got)
	}
	if got := debugfs(t, disk, "stat /link2"); !strings.Contains(got, "Type: symlink") && !strings.Contains(got, "not found") {
		t.Errorf("/link2: %s", got)
	}
	checkClean(t, s)
}

// TestUnsafePath: an entry with ".." that leaves the root fails the pull
// and leaves nothing behind.
func TestUnsafePath(t *testing.T) {
	bad := imagetest.Layer(t, imagetest.Entry{Name: "../../outside", Body: "x"})
	src := imagetest.Busybox(t, imagetest.Options{ExtraLayers: []v1.Layer{bad}})
	archive := filepath.Join(t.TempDir(), "img.tar")
	imagetest.WriteOCIArchive(t, src, archive)
	s := newStore(t)
	_, err := s.Pull(context.Background(), "oci-archive:"+archive, image.DefaultPullOptions())
	if err == nil {
		t.Fatal("pull of an image with ../../outside succeeded")
	}
	t.Logf("error: %v", err)
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.Dir()), "outside")); err == nil {
		t.Fatal("a layer wrote outside the root")
	}
	list, _ := s.List()
	if len(list) != 0 {
		t.Errorf("failed pull left %d images", len(list))
	}
	checkClean(t, s)
}

// TestPullRefusesImageOverLimits pulls an image whose layers expand past
// the store's limits: the pull fails with ErrTooLarge in one line, and
// leaves nothing behind.
func TestPullRefusesImageOverLimits(t *testing.T) {
	big := imagetest.Layer(t, imagetest.Entry{Name: "blob", Body: strings.Repeat("0", 2<<20)})
	src := imagetest.Busybox(t, imagetest.Options{ExtraLayers: []v1.Layer{big}})
	archive := filepath.Join(t.TempDir(), "img.tar")
	imagetest.WriteOCIArchive(t, src, archive)
	s := newStore(t)
	s.Limits = image.Limits{MaxBytes: 1 << 20}
	_, err := s.Pull(context.Background(), "oci-archive:"+archive, image.DefaultPullOptions())
	if !errors.Is(err, image.ErrTooLarge) {
		t.Fatalf("pull = %v, want ErrTooLarge", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "image layers expand past 1 MiB") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line about the 1 MiB limit", msg)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("refused pull left %d images", len(list))
	}
	checkClean(t, s)
}
