package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/guestmod"
)

// Agent is the running fc-agent.
type Agent struct {
	log *slog.Logger
	// diskOrder names the disks in the order the guest enumerates them,
	// for a VMM whose disks have no serial (fcvm.disks).
	diskOrder []string

	mu sync.Mutex // guards the fields below
	// gen is the host generation of the last handshake.
	gen  uint64
	ctr  *container
	plan *channel.Plan
	// members are the pod's other containers (pod_linux.go).
	members map[string]*member

	vols guestVolumes // has its own lock (volumes_linux.go)
}

// Main is fc-agent's entry point as PID 1. It never returns: on a fatal
// error it reports on the console and powers off. Started as anything
// but PID 1 it is the agent's zygote (zygote_linux.go) or refuses to run:
// an agent that is not PID 1 must not take the VM's channel or power it
// off.
func Main() {
	if os.Getpid() != 1 {
		if len(os.Args) == 2 && os.Args[1] == zygoteArg {
			if err := Zygote(); err != nil {
				fmt.Fprintf(os.Stderr, "fc-agent zygote: %v\n", err)
				os.Exit(1)
			}
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "fc-agent is the guest agent of fcvm and runs only as PID 1 of an fcvm VM")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(log); err != nil {
		fmt.Fprintf(os.Stderr, "fc-agent: fatal: %v\n", err)
	}
	powerOff()
}

func run(log *slog.Logger) error {
	t0 := time.Now()
	// The kernel starts PID 1 with no PATH; crun and its helpers need one.
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if err := earlyMounts(); err != nil {
		return err
	}
	// The console is where the host reads boot failures.
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		unix.Dup2(int(f.Fd()), 1)
		unix.Dup2(int(f.Fd()), 2)
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	params := cmdline()
	if params["debug"] == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if err := guestmod.LoadAll(log); err != nil {
		return fmt.Errorf("load modules: %w", err)
	}
	var order []string
	if params["disks"] != "" {
		order = strings.Split(params["disks"], ",")
	}
	disks, err := findDisks([]string{"base", "upper"}, order, 10*time.Second)
	if err != nil {
		return err
	}
	if err := switchRoot(disks); err != nil {
		return err
	}
	if err := rootMounts(); err != nil {
		return err
	}
	if dev, ok := disks["image"]; ok {
		if err := mount(dev, imageMount, "ext4", unix.MS_RDONLY, ""); err != nil {
			return err
		}
	}
	if err := setupLoopback(); err != nil {
		log.Warn("loopback", "err", err)
	}
	log.Info("guest ready", "boot", time.Since(t0))

	var ln listener
	switch params["channel"] {
	case "vsock":
		if ln, err = newVsockListener(channel.VsockPort); err != nil {
			return err
		}
	default:
		ln = &serialListener{name: "fcvm.0"}
	}
	a := &Agent{log: log, diskOrder: order}
	return a.serve(ln)
}

// serve accepts host sessions forever; a broken session is replaced by the
// next handshake.
func (a *Agent) serve(ln listener) error {
	for {
		a.mu.Lock()
		last := a.gen
		a.mu.Unlock()
		conn, r, hello, err := ln.accept(last)
		if err != nil {
			a.log.Warn("accept host", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if last != 0 && hello.Generation != last {
			a.restored()
		}
		a.mu.Lock()
		a.gen = hello.Generation
		a.mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		err = channel.Serve(ctx, conn, r, a.log, a.handle)
		cancel()
		conn.Close()
		a.log.Debug("session ended", "err", err)
	}
}

// restored does what a clone needs before it serves: its memory is a copy
// of another VM's, so its randomness and identity are too.
func (a *Agent) restored() {
	a.log.Info("restored from snapshot")
	seed := make([]byte, 64)
	rand.Read(seed)
	if f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0); err == nil {
		f.Write(seed) // mixes in; RNDADDENTROPY would also credit it
		f.Close()
	}
	id := make([]byte, 16)
	rand.Read(id)
	os.WriteFile("/etc/machine-id", []byte(fmt.Sprintf("%x\n", id)), 0o444)
	a.mu.Lock()
	plan := a.plan
	a.mu.Unlock()
	if plan != nil && plan.Network != nil {
		announce(a.log, plan.Network)
	}
}

func (a *Agent) handle(ctx context.Context, req channel.Request, conn net.Conn) {
	if req.Kind == channel.KindVolume {
		a.volume(req.Volume, conn) // the mount keeps conn (volumes_linux.go)
		return
	}
	defer conn.Close()
	var err error
	switch req.Kind {
	case channel.KindStart:
		if req.Container != "" {
			err = a.startMember(req.Container, req.Start, conn) // pod_linux.go
		} else {
			err = a.start(req.Start, conn)
		}
	case channel.KindRemove:
		err = a.removeMember(req.Container, conn)
	case channel.KindAttach:
		err = a.attach(req.Container, req.Attach, conn)
	case channel.KindExec:
		err = a.exec(ctx, req.Container, req.Exec, conn)
	case channel.KindSignal:
		err = a.signal(req.Container, req.Signal, conn)
	case channel.KindStatus:
		err = a.status(req.Container, conn)
	case channel.KindWatch:
		err = a.watch(req.Watch, conn)
	case channel.KindCopyOut:
		err = a.copyOut(req.Copy, conn) // copy_linux.go
	case channel.KindCopyIn:
		err = a.copyIn(req.Copy, conn)
	case channel.KindTop:
		err = a.top(conn) // procfs_linux.go
	case channel.KindStats:
		err = a.stats(conn)
	case channel.KindPoweroff:
		channel.Reply(conn, nil)
		a.log.Info("power off requested")
		a.shutdown()
		powerOff()
	default:
		err = fmt.Errorf("unknown request kind %q", req.Kind)
	}
	if err != nil {
		channel.ReplyError(conn, err)
	}
}

// shutdown stops the container so that its disks are consistent.
func (a *Agent) shutdown() {
	a.mu.Lock()
	c := a.ctr
	var ms []*member
	for _, m := range a.members {
		ms = append(ms, m)
	}
	a.mu.Unlock()
	for _, m := range ms {
		m.c.kill()
	}
	if c != nil {
		c.kill()
	}
	unix.Sync()
}
