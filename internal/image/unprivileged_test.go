package image_test

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/imagetest"
)

const nobody = 65534

// TestUnprivilegedPull pulls as an unprivileged user (the test binary
// re-executed as nobody) and checks that the disk still has the image's
// owners, device nodes and privileged xattrs.
func TestUnprivilegedPull(t *testing.T) {
	if os.Getenv("FCVM_IMAGE_HELPER") == "pull" {
		unprivilegedHelper(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root to start its unprivileged helper")
	}
	base := t.TempDir()
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	extra := imagetest.Layer(t,
		imagetest.Entry{Name: "dev/", Type: tar.TypeDir},
		imagetest.Entry{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		imagetest.Entry{Name: "bin/ping", Mode: 0o4755, Body: "x", Xattrs: map[string]string{
			"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"user.note":           "kept",
		}},
		imagetest.Entry{Name: "srv/my file", Body: "spaces\n", Uid: 1000, Gid: 1000},
	)
	src := imagetest.Busybox(t, imagetest.Options{ExtraLayers: []v1.Layer{extra}})
	archive := filepath.Join(base, "img.tar")
	imagetest.WriteOCIArchive(t, src, archive)
	store := filepath.Join(base, "store")
	if err := os.Mkdir(store, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(store, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	// The go test build dir is private to root: run a copy.
	bin := filepath.Join(base, "image.test")
	copyFile(t, os.Args[0], bin)

	cmd := exec.Command(bin, "-test.run=^TestUnprivilegedPull$", "-test.v")
	cmd.Env = append(os.Environ(), "FCVM_IMAGE_HELPER=pull", "FCVM_HELPER_STORE="+store, "FCVM_HELPER_REF=oci-archive:"+archive,
		"HOME="+base, "TMPDIR="+store)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged pull: %v\n%s", err, out)
	}
	s, err := image.Open(store, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("List: %v, %v\n%s", list, err, out)
	}
	disk := list[0].Disk
	if o, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, o)
	}
	for _, tc := range []struct{ path, want string }{
		{"/", "User:     0   Group:     0"},
		{"/bin/busybox", "User:     0   Group:     0"},
		{"/home/app", "User:  1000   Group:  1000"},
		{"/srv/my file", "User:  1000   Group:  1000"},
		{"/proc", "User:     0   Group:     0"},
		{"/dev/null", "Device major/minor number: 01:03"},
		{"/bin/ping", "Mode:  04755"},
	} {
		if got := debugfs(t, disk, `stat "`+tc.path+`"`); !strings.Contains(got, tc.want) {
			t.Errorf("%s: want %q in\n%s", tc.path, tc.want, got)
		}
	}
	if got := debugfs(t, disk, "ea_list /bin/ping"); !strings.Contains(got, "security.capability") || !strings.Contains(got, "user.note") {
		t.Errorf("/bin/ping xattrs:\n%s", got)
	}
}

func unprivilegedHelper(t *testing.T) {
	s, err := image.Open(os.Getenv("FCVM_HELPER_STORE"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), os.Getenv("FCVM_HELPER_REF"), image.DefaultPullOptions()); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
