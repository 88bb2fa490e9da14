package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/imagetest"
)

// badRun runs fcvm and checks it failed with one clear line mentioning
// want, leaving no VM records behind.
func badRun(t *testing.T, want string, args ...string) {
	t.Helper()
	before := len(list(t))
	r := fcvm(t, args...)
	if r.code == 0 {
		t.Fatalf("fcvm %v succeeded; want an error about %q", args, want)
	}
	if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(want)) {
		t.Errorf("error does not mention %q:\n%s", want, r.stderr)
	}
	if after := len(list(t)); after != before {
		t.Errorf("%d records before, %d after a failed run", before, after)
	}
}

func TestBadInput(t *testing.T) {
	needSetup(t)
	addr := imagetest.StartRegistry(t)
	imagetest.Push(t, imagetest.Busybox(t, imagetest.Options{}), addr+"/test/busybox:1")
	archive := busyboxArchive(t, imagetest.Options{})

	t.Run("unknown tag", func(t *testing.T) {
		badRun(t, "not found", "run", "--rm", "--tls-verify=false", addr+"/test/busybox:nosuch", "true")
	})
	t.Run("unknown image", func(t *testing.T) {
		badRun(t, "not found", "run", "--rm", "--tls-verify=false", addr+"/test/nosuch:1", "true")
	})
	t.Run("malformed reference", func(t *testing.T) {
		badRun(t, "reference", "run", "--rm", "UPPER/Case::bad", "true")
	})
	t.Run("unreachable registry", func(t *testing.T) {
		// A repository no test pushes: the data dir is shared across
		// runs, and an image another test pulled from a registry that
		// listened on this port then is cached under the same reference.
		closed := imagetest.ClosedAddr(t)
		badRun(t, closed, "run", "--rm", "--tls-verify=false", closed+"/test/"+uniqueName(t, "never-pushed")+":1", "true")
	})
	t.Run("firecracker without kvm", func(t *testing.T) {
		badRun(t, "--vmm qemu", "run", "--rm", "--vmm", "firecracker", archive, "true")
	})
	t.Run("memory out of range", func(t *testing.T) {
		badRun(t, "--memory", "run", "--rm", "--memory", "16", archive, "true")
	})
	t.Run("cpus out of range", func(t *testing.T) {
		badRun(t, "--cpus", "run", "--rm", "--cpus", "0", archive, "true")
	})
	t.Run("name in use", func(t *testing.T) {
		name := uniqueName(t, "taken")
		if r := fcvm(t, "run", "--name", name, archive, "true"); r.code != 0 {
			t.Fatalf("first run: %s", r)
		}
		t.Cleanup(func() { fcvm(t, "rm", "-f", name) })
		badRun(t, "already in use", "run", "--rm", "--name", name, archive, "true")
	})
	t.Run("guest fails to boot", func(t *testing.T) {
		// rdinit points at nothing: the kernel panics and the error must
		// show the console's last lines.
		t.Setenv("FCVM_KERNEL_ARGS", "rdinit=/nonexistent root=/dev/nonexistent")
		before := len(list(t))
		r := fcvm(t, "run", "--rm", archive, "true")
		if r.code == 0 || !strings.Contains(r.stderr, "guest console") || !strings.Contains(r.stderr, "panic") {
			t.Errorf("boot failure error lacks the console tail:\n%s", r)
		}
		if after := len(list(t)); after != before {
			t.Errorf("boot failure left a record")
		}
	})
}

func TestRunBeforeSetup(t *testing.T) {
	empty := t.TempDir()
	r := fcvmIn(t, empty, "run", "--rm", "oci-archive:"+filepath.Join(empty, "none.tar"), "true")
	if r.code == 0 || !strings.Contains(r.stderr, "fcvm setup") {
		t.Errorf("run before setup: %s", r)
	}
	ents, _ := os.ReadDir(filepath.Join(empty, "vms"))
	if len(ents) != 0 {
		t.Errorf("run before setup left %d entries in vms/", len(ents))
	}
}
