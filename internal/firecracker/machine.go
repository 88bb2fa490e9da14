package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcvm/fcvm/internal/vmm"
)

// Machine is one Firecracker process and the VM in it.
type Machine struct {
	log    *slog.Logger
	cmd    *exec.Cmd
	client *Client
	plan   *plan
	// Host paths. The log is always outside the jail: Firecracker writes
	// a FIFO (in the jail, if jailed) that this process copies into it.
	apiSock, vsock, logPath string

	// cancel ends cmd's context: os/exec then calls cmd.Cancel (Ctrl-Alt-Del
	// or kill) and kills the process once cmd.WaitDelay has passed.
	cancel   context.CancelFunc
	stopOnce sync.Once
	// grace is written by Stop before cancel and read by cmd.Cancel after
	// the context is done, so the context's close orders the two.
	grace    time.Duration
	stopping atomic.Bool

	// done is closed by the goroutine that owns cmd.Wait, after it has set
	// waitErr.
	done    chan struct{}
	waitErr error
	cleanup func() error

	// memMiB is the guest's RAM size; dirtyPages says Firecracker tracks
	// dirty pages, so that snapshots can be Diff snapshots.
	memMiB     int
	dirtyPages bool
}

var (
	_ vmm.Machine     = (*Machine)(nil)
	_ vmm.Snapshotter = (*Machine)(nil)
)

// PID is the Firecracker process's PID (the jailer's, which execs into
// Firecracker, in jailer mode).
func (m *Machine) PID() int { return m.cmd.Process.Pid }

// Client returns the API client, for calls the driver does not make
// itself (balloon, rate limiter updates, metrics flushes).
func (m *Machine) Client() *Client { return m.client }

// VsockPath is the host side of the guest's vsock device.
func (m *Machine) VsockPath() string { return m.vsock }

// LogPath is the file holding Firecracker's log and stderr, in RuntimeDir
// (jailed or not), capped as rotatelog caps it.
func (m *Machine) LogPath() string { return m.logPath }

// DialChannel connects to fc-agent on ChannelPort.
func (m *Machine) DialChannel(ctx context.Context) (net.Conn, error) {
	return DialVsock(ctx, m.vsock, ChannelPort)
}

// Wait blocks until the process exits. It returns nil if the process
// exited cleanly or because Stop was called.
func (m *Machine) Wait() error {
	<-m.done
	return m.waitErr
}

// Done is closed when the process has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Stop sends Ctrl-Alt-Del (the guest's kernel reboots, which with
// reboot=k ends Firecracker) and kills the process if it is still running
// after grace; a grace of 0 kills at once. Only the first call's grace
// counts. Stop returns when the process is gone or ctx is done (the kill
// still happens).
func (m *Machine) Stop(ctx context.Context, grace time.Duration) error {
	m.stopOnce.Do(func() {
		m.stopping.Store(true)
		m.grace = grace
		m.cmd.WaitDelay = grace
		m.cancel()
	})
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop firecracker %d: %w", m.PID(), ctx.Err())
	}
}

// kill ends the process at once and waits for it: the unwinding of a
// Start that failed.
func (m *Machine) kill() error {
	return m.Stop(context.Background(), 0)
}

// interrupt is cmd.Cancel.
func (m *Machine) interrupt() error {
	if m.grace <= 0 {
		return m.cmd.Process.Kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(m.grace, 2*time.Second))
	defer cancel()
	if err := m.client.Do(ctx, Action(ActionSendCtrlAltDel), nil); err != nil {
		// aarch64 has no Ctrl-Alt-Del, and a wedged VMM cannot take it:
		// neither is worth the grace period.
		m.log.Debug("firecracker: ctrl-alt-del refused, killing", "pid", m.PID(), "err", err)
		return m.cmd.Process.Kill()
	}
	return nil
}

// send runs requests in order, stopping at the first error.
func (m *Machine) send(ctx context.Context, reqs []Request) error {
	for _, r := range reqs {
		if err := m.client.Do(ctx, r, nil); err != nil {
			return m.withLog(err)
		}
	}
	return nil
}

// withLog adds the tail of Firecracker's log to err: API errors are terse
// and the log usually says why.
func (m *Machine) withLog(err error) error {
	path := m.LogPath()
	tail := logTail(path, 5)
	if tail == "" {
		return err
	}
	return fmt.Errorf("%w\nfirecracker log (%s):\n%s", err, path, tail)
}

// SnapshotOptions choose what Snapshot writes.
type SnapshotOptions struct {
	// Type is SnapshotFull (the default) or SnapshotDiff.
	Type SnapshotType
	// KeepPaused leaves the VM paused afterwards.
	KeepPaused bool
	// WhilePaused, when set, runs after the snapshot is written and
	// before the VM resumes: the caller copies the disks there.
	WhilePaused func() error
}

// SnapshotSize implements vmm.Snapshotter: Firecracker writes the guest's
// RAM itself, at most its size.
func (m *Machine) SnapshotSize() (int64, error) { return int64(m.memMiB) << 20, nil }

// Snapshot implements vmm.Snapshotter: it pauses the VM, writes
// SnapshotStateFile and SnapshotMemFile into dir (a Diff snapshot when the
// VM tracks dirty pages), runs whilePaused, and resumes the VM. Firecracker
// cannot back guest RAM with a shared file, so the memory is always written.
func (m *Machine) Snapshot(ctx context.Context, dir string, whilePaused func() error) (string, error) {
	o := SnapshotOptions{WhilePaused: whilePaused}
	if m.dirtyPages {
		o.Type = SnapshotDiff
	}
	if err := m.SnapshotWith(ctx, dir, o); err != nil {
		return "", err
	}
	return SnapshotMemFile, nil
}

// SnapshotWith is Snapshot with options. The VM is resumed even if the
// snapshot fails.
func (m *Machine) SnapshotWith(ctx context.Context, dir string, o SnapshotOptions) error {
	if o.Type == "" {
		o.Type = SnapshotFull
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("snapshot %s: %w", dir, err)
	}
	state, mem := filepath.Join(dir, SnapshotStateFile), filepath.Join(dir, SnapshotMemFile)
	vmState, vmMem := state, mem
	if m.plan.jailRoot != "" {
		// Firecracker can only write inside its jail; move the files out
		// afterwards.
		vmState, vmMem = "/snapshot-"+SnapshotStateFile, "/snapshot-"+SnapshotMemFile
	}
	reqs := snapshotRequests(vmState, vmMem, o.Type)
	if err := m.client.Do(ctx, reqs[0], nil); err != nil {
		return m.withLog(fmt.Errorf("snapshot %s: %w", dir, err))
	}
	err := m.client.Do(ctx, reqs[1], nil)
	if err == nil && m.plan.jailRoot != "" {
		err = errors.Join(moveFile(m.plan.host(vmState), state), moveFile(m.plan.host(vmMem), mem))
	}
	if err == nil && o.WhilePaused != nil {
		err = o.WhilePaused()
	}
	if !o.KeepPaused {
		// The VM must not stay paused because the caller's ctx ran out.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = errors.Join(err, m.client.Do(rctx, reqs[2], nil))
		cancel()
	}
	if err != nil {
		return m.withLog(fmt.Errorf("snapshot %s: %w", dir, err))
	}
	return nil
}

// moveFile renames, or copies across filesystems.
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	if err := copyFile(src, dst, 0o600); err != nil {
		return err
	}
	return os.Remove(src)
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// logTail returns the last n lines of a file.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(data) > 8192 {
		data = data[len(data)-8192:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
