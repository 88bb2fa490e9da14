package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/fcvm/fcvm/internal/rotatelog"
	"github.com/fcvm/fcvm/internal/vmm"
)

// launch starts the process (through the jailer if asked), waits for its
// API socket and returns the machine. On error nothing is left running.
// APISocket is the name of the API socket in a VM's RuntimeDir (outside a
// jail).
const APISocket = apiSocketName

func (d *Driver) launch(ctx context.Context, cfg vmm.Config, p *plan, configFile *VMConfig) (_ *Machine, err error) {
	log := d.opts.logger()
	bin := d.binaryPath()
	apiVM, apiHost := p.own(apiSocketName)
	_, logFIFO := p.own(logFIFOName)
	logPath := filepath.Join(cfg.RuntimeDir, logName)
	_, vsockHost := p.own(vsockName)
	_, metricsHost := p.own(metricsName)

	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				err = errors.Join(err, undo[i]())
			}
		}
	}()

	uid, gid := -1, -1
	if j := d.opts.Jailer; j != nil {
		uid, gid = j.UID, j.GID
		if err := os.MkdirAll(p.jailRoot, 0o755); err != nil {
			return nil, fmt.Errorf("jail %s: %w", p.jailRoot, err)
		}
		undo = append(undo, func() error { return removeJail(p.jailRoot) })
		if err := linkIntoJail(p.links, uid, gid); err != nil {
			return nil, err
		}
	}
	// Stale sockets from a crashed run make Firecracker's bind fail.
	for _, s := range []string{apiHost, vsockHost} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	if d.opts.Metrics {
		if err := touch(metricsHost, uid, gid); err != nil {
			return nil, fmt.Errorf("create firecracker metrics: %w", err)
		}
	}

	fcArgs := []string{"--api-sock", apiVM}
	if configFile != nil {
		data, err := json.Marshal(configFile)
		if err != nil {
			return nil, fmt.Errorf("encode config file: %w", err)
		}
		vmPath, hostPath := p.own("firecracker.json")
		if err := os.WriteFile(hostPath, data, 0o600); err != nil {
			return nil, fmt.Errorf("write config file: %w", err)
		}
		if uid >= 0 {
			if err := os.Chown(hostPath, uid, gid); err != nil {
				return nil, fmt.Errorf("write config file: %w", err)
			}
		}
		fcArgs = append(fcArgs, "--config-file", vmPath)
	}

	name, args := bin, fcArgs
	netns := cfg.NetNS
	if j := d.opts.Jailer; j != nil {
		name = d.jailerPath()
		args = append(jailerArgs(cfg, j, bin, p.jailRoot), "--")
		args = append(args, fcArgs...)
		netns = "" // the jailer joins it itself
	}

	// Firecracker's log (PUT /logger names the FIFO) and its stderr go
	// through a FIFO into a log that rotates at a cap: a guest can make
	// the VMM log (its device errors, its rate-limited events), and a
	// file would grow as it pleases. The log stays outside any jail.
	lw, err := rotatelog.Create(logPath, 0)
	if err != nil {
		return nil, fmt.Errorf("create firecracker log: %w", err)
	}
	fwLog, err := rotatelog.NewFIFO(logFIFO, lw, uid, gid)
	if err != nil {
		return nil, fmt.Errorf("create firecracker log: %w", err)
	}
	// Drained by the machine's cleanup once it runs, or by undo if it
	// never does: whichever comes first.
	drainLog := sync.OnceValue(fwLog.Drain)
	undo = append(undo, drainLog)
	stderr := fwLog.W
	defer stderr.Close() // Firecracker has its own
	// The serial console goes through a pipe into a log that rotates at
	// a cap: the guest writes it, as much as it likes.
	var console *rotatelog.Pipe
	stdout, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	defer stdout.Close()
	if cfg.ConsoleLog != "" {
		w, err := rotatelog.Create(cfg.ConsoleLog, 0)
		if err != nil {
			return nil, err
		}
		if console, err = rotatelog.NewPipe(w); err != nil {
			return nil, err
		}
		defer console.W.Close() // Firecracker has its own
		stdout = console.W
	}

	procCtx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(procCtx, name, args...)
	// The serial console is Firecracker's stdout; its log (once PUT
	// /logger has run) and any panic go to the log file. Both are files
	// (the console a pipe's end that this package drains itself), so
	// os/exec starts no copying goroutines and the WaitDelay that Stop
	// sets is only read after the context is done.
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = sysProcAttr()
	m := &Machine{
		log:     log,
		cmd:     cmd,
		client:  NewClient(apiHost),
		plan:    p,
		apiSock: apiHost,
		vsock:   vsockHost,
		logPath: logPath,
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	cmd.Cancel = m.interrupt
	m.cleanup = func() error {
		m.client.Close()
		var errs []error
		if console != nil {
			// Before done is closed, so that the logs are complete
			// when Wait returns.
			errs = append(errs, console.Drain())
		}
		errs = append(errs, drainLog())
		for _, s := range []string{apiHost, vsockHost} {
			if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		if p.jailRoot != "" {
			errs = append(errs, removeJail(p.jailRoot))
		}
		return errors.Join(errs...)
	}
	if err := m.start(netns); err != nil {
		cancel()
		if console != nil {
			console.Drain()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	log.Debug("firecracker started", "pid", m.PID(), "vm", cfg.Name, "api", apiHost)

	if err := m.waitSocket(ctx, d.socketTimeout()); err != nil {
		return nil, errors.Join(err, m.kill())
	}
	return m, nil
}

func (d *Driver) socketTimeout() time.Duration {
	if d.opts.SocketTimeout > 0 {
		return d.opts.SocketTimeout
	}
	return 5 * time.Second
}

// start runs the process from a goroutine locked to its OS thread for the
// process's whole life, and that goroutine owns cmd.Wait. Two reasons: the
// parent-death signal fires when the thread that forked the child exits,
// not the process, so that thread must outlive the child; and entering a
// network namespace with setns affects only the calling thread, which is
// then never returned to the Go scheduler.
func (m *Machine) start(netns string) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: when this goroutine returns, its thread (and the
		// namespace it may have entered) goes with it.
		if netns != "" {
			if err := enterNetNS(netns); err != nil {
				started <- err
				return
			}
		}
		if err := m.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := m.cmd.Wait()
		if m.stopping.Load() {
			err = nil
		}
		if cerr := m.cleanup(); cerr != nil {
			m.log.Warn("firecracker: cleanup after exit", "err", cerr)
		}
		m.waitErr = err
		close(m.done)
	}()
	return <-started
}

// waitSocket polls until the API answers a connect, the process exits, or
// the deadline passes.
func (m *Machine) waitSocket(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := time.Millisecond
	for {
		c, err := net.Dial("unix", m.apiSock)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-m.done:
			werr := m.waitErr
			if werr == nil {
				werr = errors.New("exit status 0")
			}
			return m.withLog(fmt.Errorf("firecracker exited before its API socket %s appeared: %w", m.apiSock, werr))
		case <-ctx.Done():
			return m.withLog(fmt.Errorf("firecracker API socket %s: not ready after %v: %w", m.apiSock, timeout, ctx.Err()))
		case <-time.After(delay):
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// jailerPath resolves the jailer binary.
func (d *Driver) jailerPath() string {
	j := d.opts.Jailer
	if j.Binary != "" {
		return j.Binary
	}
	if bin := d.binaryPath(); filepath.IsAbs(bin) {
		if p := filepath.Join(filepath.Dir(bin), "jailer"); fileExists(p) {
			return p
		}
	}
	return findBinary(d.opts.DataDir, "jailer")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
