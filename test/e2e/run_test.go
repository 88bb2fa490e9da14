package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/imagetest"
)

// busyboxArchive writes a busybox OCI archive with o and returns its
// transport reference.
func busyboxArchive(t *testing.T, o imagetest.Options) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "busybox.tar")
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, o), path)
	return "oci-archive:" + path
}

const streamsScript = "echo out; echo err >&2; exit 7"

func checkStreams(t *testing.T, r result) {
	t.Helper()
	if r.code != 7 {
		t.Errorf("exit code %d, want 7\n%s", r.code, r)
	}
	if r.stdout != "out\n" {
		t.Errorf("stdout %q, want %q", r.stdout, "out\n")
	}
	if !strings.Contains(r.stderr, "err\n") || strings.Contains(r.stderr, "out") {
		t.Errorf("stderr %q: want err and not out", r.stderr)
	}
}

func TestSetupTwiceIsNoop(t *testing.T) {
	needSetup(t)
	r := fcvm(t, "setup")
	if r.code != 0 {
		t.Fatalf("second setup: %s", r)
	}
	if !strings.Contains(r.stdout+r.stderr, "up to date") {
		t.Errorf("second setup did not say it had nothing to do:\n%s", r)
	}
}

func TestRunOCIArchiveStreamsAndExitCode(t *testing.T) {
	needSetup(t)
	t.Parallel()
	ref := busyboxArchive(t, imagetest.Options{})
	r := fcvm(t, "run", "--rm", "--vmm", "qemu", ref, "sh", "-c", streamsScript)
	checkStreams(t, r)
}

func TestRunFromLocalRegistry(t *testing.T) {
	needSetup(t)
	t.Parallel()
	addr := imagetest.StartRegistry(t)
	ref := addr + "/test/busybox:1"
	imagetest.Push(t, imagetest.Busybox(t, imagetest.Options{}), ref)
	r := fcvm(t, "run", "--rm", "--tls-verify=false", ref, "sh", "-c", streamsScript)
	checkStreams(t, r)
}

func TestImageConfigHonoured(t *testing.T) {
	needSetup(t)
	t.Parallel()
	ref := busyboxArchive(t, imagetest.Options{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{`echo "$GREETING"; pwd; id -u`},
		Env:        []string{"PATH=/bin:/usr/bin", "GREETING=from-image"},
		WorkingDir: "/srv",
		User:       "1000",
		ExtraFiles: map[string]string{"/srv/.keep": ""},
	})
	r := fcvm(t, "run", "--rm", ref)
	if r.code != 0 || r.stdout != "from-image\n/srv\n1000\n" {
		t.Errorf("image config: %s", r)
	}
	r = fcvm(t, "run", "--rm", "-e", "GREETING=from-flag", "-w", "/tmp", "-u", "0", ref)
	if r.code != 0 || r.stdout != "from-flag\n/tmp\n0\n" {
		t.Errorf("flags over image config: %s", r)
	}
	r = fcvm(t, "run", "--rm", "--entrypoint", "/bin/echo", ref, "replaced")
	if r.code != 0 || r.stdout != "replaced\n" {
		t.Errorf("--entrypoint: %s", r)
	}
}

func TestRmRemovesEverything(t *testing.T) {
	needSetup(t)
	t.Parallel()
	ref := busyboxArchive(t, imagetest.Options{})

	auto := uniqueName(t, "auto")
	if r := fcvm(t, "run", "--rm", "--name", auto, ref, "true"); r.code != 0 {
		t.Fatalf("run --rm: %s", r)
	}
	assertNothingLeft(t, auto, "")

	kept := uniqueName(t, "kept")
	if r := fcvm(t, "run", "--name", kept, ref, "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("run: %s", r)
	}
	rec := findVM(t, kept)
	if rec == nil || rec.Status != "exited" || rec.ExitCode == nil || *rec.ExitCode != 3 {
		t.Fatalf("record after exit: %+v", rec)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "vms", rec.ID, "upper.ext4")); err != nil {
		t.Errorf("disk of a stopped VM without --rm: %v", err)
	}
	if r := fcvm(t, "rm", kept); r.code != 0 {
		t.Fatalf("rm: %s", r)
	}
	assertNothingLeft(t, kept, rec.ID)
}

func TestSIGTERMStopsForegroundRun(t *testing.T) {
	needSetup(t)
	t.Parallel()
	ref := busyboxArchive(t, imagetest.Options{})
	name := uniqueName(t, "sleep")
	cmd := fcvmCmd(t.Context(), dataDir, "run", "--rm", "--name", name, ref, "sleep", "1000")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the container runs: the record says running and the
	// guest has had time to start podman.
	var rec *vmRecord
	deadline := time.Now().Add(3 * time.Minute)
	for rec == nil || rec.Status != "running" {
		if time.Now().After(deadline) {
			t.Fatalf("VM never running; output:\n%s", out.String())
		}
		time.Sleep(500 * time.Millisecond)
		rec = findVM(t, name)
	}
	time.Sleep(5 * time.Second)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("fcvm run did not stop within 30s of SIGTERM; output:\n%s", out.String())
	}
	t.Logf("stopped in %s", time.Since(start))
	if syscall.Kill(rec.VMMPID, 0) == nil {
		if b, _ := os.ReadFile("/proc/" + itoa(rec.VMMPID) + "/cmdline"); strings.Contains(string(b), "qemu") {
			t.Errorf("VMM %d still running", rec.VMMPID)
		}
	}
	assertNothingLeft(t, name, rec.ID)
}

func TestTwoRunsAtOnce(t *testing.T) {
	needSetup(t)
	t.Parallel()
	ref := busyboxArchive(t, imagetest.Options{})
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = fcvm(t, "run", "--rm", "--name", uniqueName(t, itoa(i)), ref, "sh", "-c", "echo vm"+itoa(i))
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 || r.stdout != "vm"+itoa(i)+"\n" {
			t.Errorf("run %d: %s", i, r)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
