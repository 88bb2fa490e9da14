package firecracker

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/vmm"
)

// minimalConfig is a VM with a kernel and nothing else, in dir.
func minimalConfig(dir string) vmm.Config {
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, []byte("not a kernel"), 0o644)
	return vmm.Config{
		Name:       "vm1",
		RuntimeDir: dir,
		Kernel:     kernel,
		VCPUs:      1,
		MemoryMiB:  128,
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

// fullConfig is fcvm's usual VM: initrd, the three disks, a network
// interface.
func fullConfig(t *testing.T, dir string) vmm.Config {
	t.Helper()
	cfg := minimalConfig(dir)
	cfg.Initrd = filepath.Join(dir, "initrd.img")
	cfg.Cmdline = "fcvm.vm=vm1 quiet"
	cfg.VCPUs, cfg.MemoryMiB = 2, 512
	for _, d := range []vmm.Disk{{ID: "base", ReadOnly: true}, {ID: "upper"}, {ID: "image", ReadOnly: true}} {
		d.Path = filepath.Join(dir, d.ID+".img")
		cfg.Disks = append(cfg.Disks, d)
	}
	for _, f := range []string{cfg.Initrd, cfg.Disks[0].Path, cfg.Disks[1].Path, cfg.Disks[2].Path} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Net = &vmm.Net{TAP: "tap0", MAC: "06:00:ac:10:00:02"}
	return cfg
}

var testPlan = json.RawMessage(`{"fcvm":{"image":"docker.io/library/nginx:alpine","cmd":["nginx","-g","daemon off;"],"env":["A=1"]}}`)

func ops(calls []call) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Op)
	}
	return out
}

// assertValid fails the test for any request the fake found spec-invalid.
func assertValid(t *testing.T, calls []call) {
	t.Helper()
	for _, c := range calls {
		if c.Invalid != "" {
			t.Errorf("%s: spec rejects request: %s\nbody: %s", c.Op, c.Invalid, c.Body)
		}
	}
}

func bodyOf(t *testing.T, calls []call, op string) map[string]any {
	t.Helper()
	for _, c := range calls {
		if c.Op == op {
			var m map[string]any
			if err := json.Unmarshal(c.Body, &m); err != nil {
				t.Fatalf("%s body: %v", op, err)
			}
			return m
		}
	}
	t.Fatalf("no %s call", op)
	return nil
}

// testLogger writes the driver's messages to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
