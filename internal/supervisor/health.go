package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/health"
	"github.com/fcvm/fcvm/internal/network"
	"github.com/fcvm/fcvm/internal/state"
)

// HealthOptions are the --health-* flags. With neither URL nor Cmd there
// is no check.
//
// URL is fetched from the host. Its host "guest" stands for the
// container: bridged VMs are reached at their Network.HostIP (any port),
// rootless VMs only through a published TCP port (the URL's port must be
// published with -p); any other host is used as it is, e.g. a published
// address like http://127.0.0.1:8080/. Cmd runs in the container, as
// `fcvm exec` would run it.
type HealthOptions struct {
	URL string
	Cmd string
	health.Config
}

func (h HealthOptions) enabled() bool { return h.URL != "" || h.Cmd != "" }

// validate checks the flags without I/O; Options.Validate calls it.
func (h HealthOptions) validate(networkMode string) error {
	if !h.enabled() {
		return nil
	}
	if h.URL != "" && h.Cmd != "" {
		return errors.New("--health-url and --health-cmd: give one health check, not both")
	}
	if err := h.Config.Validate(); err != nil {
		return err
	}
	if h.Cmd != "" {
		_, err := health.ParseCommand(h.Cmd)
		return err
	}
	_, guestPort, err := health.ParseURL(h.URL)
	if err != nil {
		return err
	}
	if guestPort != 0 && networkMode == network.ModeNone {
		return fmt.Errorf("--health-url %s with --network none: the host cannot reach the container; use --health-cmd, or a network", h.URL)
	}
	return nil
}

// healthToKeep is h as launch.json keeps it for start: nil without a
// check.
func healthToKeep(h HealthOptions) *HealthOptions {
	if !h.enabled() {
		return nil
	}
	return &h
}

// vmHealth is a VM's running health check.
type vmHealth struct {
	opts HealthOptions
	url  string // opts.URL resolved for the host

	once    sync.Once
	checker atomic.Pointer[health.Checker] // set by once
}

// prepareHealth resolves the health check against the VM's network; Launch
// calls it after the network exists, before the VMM starts.
func (vm *VM) prepareHealth(h HealthOptions) error {
	vm.health = &vmHealth{opts: h}
	if !h.enabled() || h.URL == "" {
		return nil
	}
	n := vm.Record.Network
	u, err := health.GuestURL(h.URL, func(guestPort int) (string, error) {
		return guestAddr(n, guestPort, h.URL)
	})
	if err != nil {
		return err
	}
	vm.health.url = u
	return nil
}

// guestAddr is where the host reaches the container's TCP port.
func guestAddr(n state.Network, guestPort int, flag string) (string, error) {
	port := strconv.Itoa(guestPort)
	if n.Mode == network.ModeBridged && n.HostIP != "" {
		return n.HostIP + ":" + port, nil
	}
	if sp, err := network.ParseMode(n.Mode); err == nil && sp.Mode == network.ModeNS && n.GuestIP != "" {
		// The guest has the namespace's address, which its owner routes.
		return net.JoinHostPort(n.GuestIP, port), nil
	}
	for _, p := range n.Ports {
		if p.GuestPort == guestPort && p.Proto == "tcp" {
			ip := p.HostIP
			if ip == "" || ip == "0.0.0.0" {
				ip = "127.0.0.1"
			}
			return ip + ":" + strconv.Itoa(p.HostPort), nil
		}
	}
	return "", fmt.Errorf("--health-url %s: container port %d is not published, and a %s VM is reached from the host only through published ports: add -p HOSTPORT:%d, or use --network bridged", flag, guestPort, n.Mode, guestPort)
}

// startHealth starts the checks once the container runs; Run calls it
// every time it (re)connects, and only the first call does anything. The
// checks end with ctx (Run's).
func (vm *VM) startHealth(ctx context.Context) {
	h := vm.health
	if h == nil || !h.opts.enabled() {
		return
	}
	h.once.Do(func() {
		var probe health.Probe
		if h.url != "" {
			probe = &health.HTTP{URL: h.url}
		} else {
			cmd, _ := health.ParseCommand(h.opts.Cmd) // validated
			probe = &health.Command{Cmd: cmd, Run: vm.execForHealth}
		}
		c := &health.Checker{
			Probe:  probe,
			Config: h.opts.Config,
			Log:    vm.log.With("check", "health"),
			Paused: vm.paused.Load,
			OnChange: func(r health.Result) {
				if r.Status == health.Unhealthy {
					vm.log.Warn("container unhealthy", "failures", r.Failures, "err", r.Err)
				}
				if _, err := vm.store.Update(vm.Record.ID, func(rec *state.Record) error {
					rec.Health = r.Status
					return nil
				}); err != nil {
					vm.log.Warn("store health", "err", err)
				}
				vm.Record.Health = r.Status
			},
		}
		h.checker.Store(c)
		go c.Run(ctx)
	})
}

// WaitHealthy blocks until the container is healthy. It fails when it is
// unhealthy (Retries checks in a row failed), when the checks stop because
// the container exited, or when ctx ends. The VM keeps running in every
// case but the second.
func (vm *VM) WaitHealthy(ctx context.Context) error {
	h := vm.health
	if h == nil || !h.opts.enabled() {
		return errors.New("--wait-healthy needs a health check: add --health-url or --health-cmd")
	}
	// Run starts the checks before it reports the container started,
	// which is when callers wait.
	c := h.checker.Load()
	if c == nil {
		return errors.New("wait for health: the container has not started")
	}
	name := vm.Record.Name
	r, err := c.WaitDecided(ctx)
	switch {
	case errors.Is(err, health.ErrStopped):
		return fmt.Errorf("container of %s exited before it was healthy (last check: %v): see fcvm logs %s", name, r.Err, name)
	case err != nil:
		return err
	case r.Status == health.Unhealthy:
		return fmt.Errorf("container of %s is unhealthy: %d checks in a row failed, the last: %v; the VM keeps running: see fcvm logs %s, or remove it with fcvm rm -f %s", name, r.Failures, r.Err, name, name)
	}
	return nil
}

// execForHealth runs cmd in the container through the agent's exec and
// returns its exit code and up to 4 KiB of its output. When ctx ends
// first (the check timed out) the command is killed.
func (vm *VM) execForHealth(ctx context.Context, cmd []string) (int, []byte, error) {
	c, err := vm.sess.get(ctx)
	if err != nil {
		return 0, nil, err
	}
	s, _, err := c.Open(ctx, channel.Request{Kind: channel.KindExec, Exec: &channel.ExecRequest{Cmd: cmd}})
	if err != nil {
		return 0, nil, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() {
		channel.WriteFrame(s, channel.FrameSignal, channel.Uint32(uint32(syscall.SIGKILL)))
		s.Close()
	})
	defer stop()
	var out []byte
	for {
		f, err := channel.ReadFrame(s)
		if err != nil {
			if ctx.Err() != nil {
				return 0, out, ctx.Err()
			}
			return 0, out, fmt.Errorf("exec stream ended before the exit status: %w", err)
		}
		switch f.Type {
		case channel.FrameStdout, channel.FrameStderr:
			out = append(out, f.Payload...)
			if len(out) > 4096 {
				out = out[len(out)-4096:]
			}
		case channel.FrameExit:
			code, err := channel.ParseUint32(f.Payload)
			return int(int32(code)), out, err
		case channel.FrameError:
			return 0, out, &channel.GuestError{Msg: string(f.Payload)}
		}
	}
}
