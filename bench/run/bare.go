package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/fcvm/fcvm/internal/artifacts"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/kvm"
	"github.com/fcvm/fcvm/internal/qemu"
	"github.com/fcvm/fcvm/internal/vmm"
)

// bareInitrd builds an initramfs holding only bench/bareinit as /init.
func bareInitrd(dir string) (string, error) {
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "init"), "./bench/bareinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build bench/bareinit (run from the repository's root): %w: %s", err, out)
	}
	cpio := filepath.Join(dir, "bare.cpio")
	pack := exec.Command("sh", "-c", "echo init | cpio --quiet -o -H newc > bare.cpio")
	pack.Dir = dir
	if out, err := pack.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cpio: %w: %s", err, out)
	}
	return cpio, nil
}

// bareBoot boots the current kernel with the qemu driver, the same
// machine and kernel arguments as a cold run, and the bare initramfs, and
// times it from the VMM's start to its exit.
func bareBoot(ctx context.Context, dirs datadir.Dirs, initrd string, memMiB int) (time.Duration, error) {
	set, err := artifacts.Load(dirs.Data)
	if err != nil {
		return 0, err
	}
	run, err := os.MkdirTemp("", "fcvm-bench-bare-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(run)
	d := &qemu.Driver{Accel: os.Getenv(kvm.AccelEnv)}
	t0 := time.Now()
	m, err := d.Start(ctx, vmm.Config{
		Name: "bare", RuntimeDir: run, Kernel: set.Kernel, Initrd: initrd,
		Cmdline: artifacts.KernelArgs, VCPUs: 1, MemoryMiB: memMiB,
	})
	if err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		m.Stop(ctx, 0)
		return 0, fmt.Errorf("bare boot: the VMM still runs after 2 minutes")
	}
	return time.Since(t0), err
}
