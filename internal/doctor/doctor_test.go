package doctor

import (
	"context"
	"github.com/fcvm/fcvm/internal/kvm"
	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func names(r Report) []string {
	var n []string
	for _, c := range r.Checks {
		n = append(n, c.Name)
	}
	return n
}

func TestRunReportsEveryCheck(t *testing.T) {
	r := Run(context.Background(), Options{DataDir: filepath.Join(t.TempDir(), "not", "yet")})
	want := "root kvm firecracker qemu userfaultfd reflink rootless-network nftables fuse setup-tools guest-artifacts"
	if got := strings.Join(names(r), " "); got != want {
		t.Fatalf("checks %q, want %q", got, want)
	}
	for _, c := range r.Checks {
		t.Logf("%-16s ok=%-5v %s | fix: %s", c.Name, c.OK, c.Detail, c.Fix)
		if c.Detail == "" || c.NeededFor == "" {
			t.Errorf("%s: empty detail or needed_for", c.Name)
		}
		if c.OK != (c.Fix == "") {
			t.Errorf("%s: ok %v but fix %q", c.Name, c.OK, c.Fix)
		}
	}
	// Facts of this machine (see the shared notes): root, no usable KVM,
	// QEMU installed, no guest artifacts in a fresh data dir.
	mustBe := func(name string, ok bool, fixHas string) {
		t.Helper()
		c, _ := r.Get(name)
		if c.OK != ok || !strings.Contains(c.Fix, fixHas) {
			t.Errorf("%s: ok %v fix %q; want ok %v and a fix with %q", name, c.OK, c.Fix, ok, fixHas)
		}
	}
	mustBe("root", os.Geteuid() == 0, "")
	mustBe("guest-artifacts", false, "fcvm setup")
	if !kvm.Probe().Usable {
		mustBe("kvm", false, "--vmm qemu")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		mustBe("qemu", true, "")
	}
	if c, _ := r.Get("rootless-network"); c.OK && !strings.Contains(c.Detail, "do not reach the host's loopback") {
		t.Errorf("rootless-network: detail %q does not say the default network keeps the host's loopback closed", c.Detail)
	}
}

// TestReflinkOnBtrfs mounts a btrfs loop file and checks that the reflink
// check sees the difference from the test's temp dir.
func TestReflinkOnBtrfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a loop file: run it as root")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "btrfs.img")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(128 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs (apt-get install btrfs-progs): %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})

	c := checkReflink(context.Background(), Options{DataDir: filepath.Join(mnt, "fcvm")})
	if !c.OK || !strings.Contains(c.Detail, "btrfs") {
		t.Errorf("btrfs: %+v", c)
	}
	ents, _ := os.ReadDir(mnt)
	if len(ents) != 0 {
		t.Errorf("reflink check left %d files behind", len(ents))
	}
	if fsType(dir) == "ext4" {
		c := checkReflink(context.Background(), Options{DataDir: dir})
		if c.OK || !strings.Contains(c.Fix, "mkfs.btrfs") {
			t.Errorf("ext4: %+v", c)
		}
	}
}
