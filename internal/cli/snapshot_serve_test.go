package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/syncbuf"
)

func TestSnapshotServe(t *testing.T) {
	dir := t.TempDir()
	mem := filepath.Join(dir, "mem")
	if err := os.WriteFile(mem, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "uffd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"snapshot", "serve", "--mem-file", mem, "--socket", sock}, nil, &stdout, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for stdout.String() == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := strings.TrimSpace(stdout.String()); got != sock {
		t.Fatalf("printed %q, want the socket path %q", got, sock)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("socket not there while serving: %v", err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	for !strings.Contains(stderr.String(), "FAULTS") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "P99") {
		t.Errorf("SIGUSR1 printed no stats table: %q", stderr.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestSnapshotServeUnknownTag(t *testing.T) {
	t.Setenv("FCVM_DATA_DIR", t.TempDir())
	t.Setenv("FCVM_RUNTIME_DIR", t.TempDir())
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"snapshot", "serve", "mytag"}, nil, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "not found") || !strings.Contains(stderr.String(), "fcvm snapshot ls") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}
