// Package e2e runs fcvm end to end: the real binaries, real VMs under QEMU
// (TCG here), real images from archives and a local registry. Nothing
// leaves this machine.
//
// The guest artifacts are built once per data dir ($FCVM_E2E_DATA_DIR,
// default /var/tmp/fcvm-e2e) so repeated local runs do not debootstrap
// again; CI starts from an empty one, which is the "setup from scratch"
// case.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/uffd/uffdtest"
)

var (
	binDir     string
	dataDir    string
	runtimeDir string
)

func TestMain(m *testing.M) {
	// This binary doubles as a Firecracker-protocol memory client.
	uffdtest.RunHelper()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: these tests need root (VMs, mounts, namespaces): run them with sudo")
		os.Exit(1)
	}
	tmp, err := os.MkdirTemp("", "fcvm-e2e-bin-")
	if err != nil {
		panic(err)
	}
	binDir = tmp
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	build := exec.Command("go", "build", "-o", binDir+"/", "./cmd/fcvm", "./cmd/fc-agent", "./cmd/containerd-shim-fcvm-v2")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build: %v\n%s", err, out)
		os.Exit(1)
	}
	dataDir = os.Getenv("FCVM_E2E_DATA_DIR")
	if dataDir == "" {
		dataDir = "/var/tmp/fcvm-e2e"
	}
	runtimeDir, _ = os.MkdirTemp("", "fcvm-e2e-run-")
	code := m.Run()
	os.RemoveAll(binDir)
	os.RemoveAll(runtimeDir)
	os.Exit(code)
}

// result is one fcvm invocation's outcome.
type result struct {
	stdout, stderr string
	code           int
	// runErr says the command could not be run at all.
	runErr error
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %q\nstderr: %q", r.code, r.stdout, r.stderr)
}

// fcvmCmd builds a command for the fcvm binary with the test's dirs.
func fcvmCmd(ctx context.Context, data string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "fcvm"), args...)
	cmd.Env = append(os.Environ(),
		"FCVM_DATA_DIR="+data,
		"FCVM_RUNTIME_DIR="+runtimeDir,
		// No guest DNS query may leave this machine: the guest's resolver
		// forwards to a closed loopback port unless a test points it at
		// its own server (append FCVM_DNS=127.0.0.1:PORT to cmd.Env).
		"FCVM_DNS="+closedDNS,
	)
	return cmd
}

// closedDNS is a loopback UDP port nothing listens on (discard's).
const closedDNS = "127.0.0.1:9"

// fcvm runs fcvm to completion against the shared data dir.
func fcvm(t *testing.T, args ...string) result {
	t.Helper()
	return fcvmIn(t, dataDir, args...)
}

func fcvmIn(t *testing.T, data string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return runCmd(t, fcvmCmd(ctx, data, args...), args)
}

// runCmd runs a prepared fcvm command to completion and logs its result.
func runCmd(t *testing.T, cmd *exec.Cmd, args []string) result {
	t.Helper()
	r := runQuiet(cmd, nil)
	if r.runErr != nil {
		t.Fatalf("fcvm %v: %v", args, r.runErr)
	}
	if cmd.Dir != "" {
		t.Logf("(in %s) fcvm %s → %s", cmd.Dir, strings.Join(args, " "), r)
	} else {
		t.Logf("fcvm %s → %s", strings.Join(args, " "), r)
	}
	return r
}

var (
	setupOnce sync.Once
	setupErr  string
)

// needSetup builds the guest artifacts once for the whole run.
func needSetup(t *testing.T) {
	t.Helper()
	setupOnce.Do(func() {
		r := fcvmIn(t, dataDir, "setup")
		if r.code != 0 {
			setupErr = r.String()
		}
	})
	if setupErr != "" {
		t.Fatalf("fcvm setup failed:\n%s", setupErr)
	}
}

// vmRecord is the part of `fcvm ls --json` the tests look at.
type vmRecord struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Status   string `json:"status"`
	ExitCode *int   `json:"exit_code"`
	PID      int    `json:"pid"`
	VMMPID   int    `json:"vmm_pid"`
}

func list(t *testing.T) []vmRecord {
	t.Helper()
	r := fcvm(t, "ls", "-a", "--json")
	if r.code != 0 {
		t.Fatalf("fcvm ls: %s", r)
	}
	var recs []vmRecord
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil {
		t.Fatalf("decode ls --json: %v\n%s", err, r.stdout)
	}
	return recs
}

func findVM(t *testing.T, name string) *vmRecord {
	for _, r := range list(t) {
		if r.Name == name {
			return &r
		}
	}
	return nil
}

// uniqueName gives each test its own VM names in the shared data dir.
func uniqueName(t *testing.T, suffix string) string {
	n := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	return fmt.Sprintf("%s-%s-%d", n, suffix, time.Now().UnixNano()%100000)
}

// assertNothingLeft checks that a removed VM left no record, disk or socket.
func assertNothingLeft(t *testing.T, name, id string) {
	t.Helper()
	if findVM(t, name) != nil {
		t.Errorf("record of %s still listed", name)
	}
	if id == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(dataDir, "vms", id)); err == nil {
		t.Errorf("VM dir of %s still exists", name)
	}
	if _, err := os.Stat(filepath.Join(runtimeDir, id[:12])); err == nil {
		t.Errorf("runtime dir of %s still exists", name)
	}
}
