package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/kvm"
	"github.com/fcvm/fcvm/internal/rotatelog"
	"github.com/fcvm/fcvm/internal/vmm"
)

// Driver starts VMs with qemu-system-x86_64.
type Driver struct {
	// Binary is the QEMU executable; "" finds qemu-system-x86_64 on PATH.
	Binary string
	// Accel is kvm, tcg, or auto or "" for KVM where kvm.Probe finds it
	// usable (FCVM_QEMU_ACCEL sets it from the environment).
	Accel string
}

var (
	_ vmm.Driver  = (*Driver)(nil)
	_ vmm.Machine = (*Machine)(nil)
)

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "qemu" }

func (d *Driver) binary() (string, error) {
	name := d.Binary
	if name == "" {
		name = "qemu-system-x86_64"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("qemu: %s not found: install it with `apt-get install qemu-system-x86`: %w", name, vmm.ErrUnavailable)
	}
	return p, nil
}

// Available implements vmm.Driver.
func (d *Driver) Available() error {
	if _, err := kvm.Accel(d.Accel); err != nil {
		return err
	}
	_, err := d.binary()
	return err
}

// hostTSCKHz estimates the host's TSC frequency from /proc/cpuinfo. TCG's
// guest TSC runs at the host's rate; 0 means unknown.
func hostTSCKHz() int {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0
			}
			return int(mhz * 1000)
		}
	}
	return 0
}

// Start implements vmm.Driver. Guest RAM is a shared file in the runtime
// dir, which is what makes the VM snapshottable without copying its
// memory through the migration stream.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	m, err := d.start(ctx, cfg, filepath.Join(cfg.RuntimeDir, memFile), "")
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return m, nil
}

// start runs QEMU with guest RAM in the file mem: shared for a cold boot,
// mapped privately for a restore from incoming.
func (d *Driver) start(ctx context.Context, cfg vmm.Config, mem, incoming string) (*Machine, error) {
	bin, err := d.binary()
	if err != nil {
		return nil, err
	}
	accel, err := kvm.Accel(d.Accel)
	if err != nil {
		return nil, err
	}
	a, err := args(cfg, mem, accel == kvm.AccelKVM, hostTSCKHz(), incoming)
	if err != nil {
		return nil, err
	}
	for _, s := range []string{channelSocket, qmpSocket} {
		os.Remove(filepath.Join(cfg.RuntimeDir, s))
	}
	cmd := exec.Command(bin, a...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// The VMM never outlives its supervisor.
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	m := &Machine{
		cfg:      cfg,
		mem:      mem,
		incoming: incoming != "",
		cmd:      cmd,
		done:     make(chan struct{}),
	}
	cmd.Stdout = &m.stderr
	cmd.Stderr = &m.stderr
	if cfg.ConsoleLog != "" {
		w, err := rotatelog.Create(cfg.ConsoleLog, 0)
		if err != nil {
			return nil, fmt.Errorf("start qemu: %w", err)
		}
		if m.console, err = rotatelog.NewPipe(w); err != nil {
			return nil, fmt.Errorf("start qemu: %w", err)
		}
		cmd.Stdout = m.console.W // -serial stdio
	}
	start := cmd.Start
	if cfg.StartProcess != nil {
		start = func() error { return cfg.StartProcess(cmd) }
	}
	if err := startPinned(start, m.wait); err != nil {
		m.drainConsole()
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	if m.console != nil {
		m.console.W.Close() // QEMU has its own
	}

	if incoming == "" {
		// A cold boot needs nothing from QEMU until the guest answers on
		// the channel, which the caller dials with retries; QEMU's own
		// start-up (~100 ms under TCG) overlaps with the caller's work.
		// A QEMU that fails at once is reported by Wait.
		return m, nil
	}
	// A restore talks to QMP next: wait for QEMU's sockets.
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(filepath.Join(cfg.RuntimeDir, qmpSocket)); err == nil {
			if _, err := os.Stat(filepath.Join(cfg.RuntimeDir, channelSocket)); err == nil {
				return m, nil
			}
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("start qemu: exited at once: %w: %s", m.err, m.stderr.tail())
		case <-ctx.Done():
			m.kill()
			return nil, ctx.Err()
		case <-deadline.C:
			m.kill()
			return nil, fmt.Errorf("start qemu: sockets not created in 10s: %s", m.stderr.tail())
		case <-tick.C:
		}
	}
}

// startPinned runs start, then wait, on a goroutine locked to its OS
// thread for the child's whole life. The parent-death signal fires when
// the thread that forked the child exits, not the process, and Go retires
// a thread whose locked goroutine ends (network namespace code does so on
// purpose): a VMM forked from such a thread would die with it.
func startPinned(start func() error, wait func()) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		if err := start(); err != nil {
			started <- err
			return
		}
		started <- nil
		wait()
	}()
	return <-started
}

// Machine is one QEMU process.
type Machine struct {
	cfg vmm.Config
	// mem is the guest's RAM file; incoming says it is a clone's private
	// mapping of a snapshot's.
	mem      string
	incoming bool
	cmd      *exec.Cmd
	stderr   tailBuffer
	// console copies the serial console into cfg.ConsoleLog, capped; nil
	// without one.
	console *rotatelog.Pipe

	// done is closed once cmd has been waited for; err is its result.
	done chan struct{}
	err  error

	stopOnce sync.Once
}

func (m *Machine) wait() {
	m.err = m.cmd.Wait()
	m.drainConsole()
	close(m.done)
}

// drainConsole copies the end of the console into its log, so that it is
// complete once Wait returns, and closes the log. A log that could not be
// written loses console lines, which is not the VM's failure.
func (m *Machine) drainConsole() {
	if m.console != nil {
		m.console.Drain()
	}
}

func (m *Machine) kill() {
	m.cmd.Process.Kill()
	<-m.done
}

// PID implements vmm.Machine.
func (m *Machine) PID() int { return m.cmd.Process.Pid }

// DialChannel implements vmm.Machine.
func (m *Machine) DialChannel(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", filepath.Join(m.cfg.RuntimeDir, channelSocket))
}

// Wait implements vmm.Machine.
func (m *Machine) Wait() error {
	<-m.done
	if m.err != nil {
		return fmt.Errorf("qemu: %w: %s", m.err, m.stderr.tail())
	}
	return nil
}

// Done is closed when the QEMU process has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Stop implements vmm.Machine: it waits up to grace for the guest to power
// itself off (the caller asks it to over the channel), then asks QEMU to
// quit, then kills it.
func (m *Machine) Stop(ctx context.Context, grace time.Duration) error {
	m.stopOnce.Do(func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-m.done:
			return
		case <-t.C:
		case <-ctx.Done():
		}
		if q, err := dialQMP(filepath.Join(m.cfg.RuntimeDir, qmpSocket), time.Second); err == nil {
			q.execute("quit", nil)
			q.Close()
		} else {
			m.cmd.Process.Signal(syscall.SIGTERM)
		}
		t2 := time.NewTimer(3 * time.Second)
		defer t2.Stop()
		select {
		case <-m.done:
		case <-t2.C:
			m.kill()
		}
	})
	<-m.done
	return nil
}

// tailBuffer keeps the last few KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex // guards buf
	buf []byte
}

const tailMax = 8 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > tailMax {
		b.buf = b.buf[len(b.buf)-tailMax:]
	}
	return len(p), nil
}

func (b *tailBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}
