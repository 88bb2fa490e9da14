// Package shim is containerd-shim-fcvm-v2, the containerd runtime v2 shim
// of runtime type io.containerd.fcvm.v2: it serves containerd's task API
// over ttrpc and runs each container in its own fcvm microVM, and each CRI
// pod in one microVM with its containers as members (pod.go), through
// internal/engine. The shim process is the VM's supervisor, as a
// foreground `fcvm run` is: the VMM dies with it (parent-death signal),
// and what a killed shim leaves (records, sockets, network) containerd's
// `shim delete` call reclaims through the engine.
//
// The container's rootfs, which containerd hands over as unmounted
// snapshot mounts, is mounted on the host only long enough to build (or
// find cached) a read-only ext4 disk of it, keyed by its layer snapshots
// (rootfs.go); the guest boots that disk as it boots a pulled image.
package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/sirupsen/logrus"

	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/engine"
)

// RuntimeType is the runtime name containerd is configured with; it
// derives the binary's name, BinaryName, from it.
const (
	RuntimeType = "io.containerd.fcvm.v2"
	BinaryName  = "containerd-shim-fcvm-v2"
)

// Main runs the shim; containerd calls the binary with "start", "delete"
// or, for the long-lived server, no action. It does not return.
func Main() {
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pub, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			sd, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			eng, log, err := newEngine(logrus.StandardLogger().Out)
			if err != nil {
				return nil, err
			}
			return newService(ic.Context, eng, log, pub.(shim.Publisher), sd.(shutdown.Service))
		},
	})
	// No reaper and no subreaper: the shim's children are its VMMs and
	// helpers, which the supervisor code waits for itself; a reaper
	// would steal their exit statuses.
	shim.RunManager(context.Background(), manager{}, func(c *shim.Config) {
		c.NoReaper = true
		c.NoSubreaper = true
	})
	os.Exit(0)
}

// newEngine is the engine over fcvm's data directory (FCVM_DATA_DIR, as
// containerd's environment sets it), logging to w.
func newEngine(w io.Writer) (*engine.Engine, *slog.Logger, error) {
	dirs, err := datadir.Default()
	if err != nil {
		return nil, nil, err
	}
	log := slog.New(slog.NewTextHandler(w, nil))
	return engine.New(dirs, log), log, nil
}

// vmName is the fcvm name of container id in namespace ns: fixed, so that
// `shim delete` finds the VM of a shim that died.
func vmName(ns, id string) string { return "ctrd-" + ns + "-" + id }

// manager is the shim binary's start and delete actions.
type manager struct{}

func (manager) Name() string { return RuntimeType }

// Start starts the long-lived shim server for container id and returns
// its socket address, which containerd writes down and dials. A CRI pod's
// containers go to their sandbox's server, which runs them in the pod's
// VM: the socket is named for the sandbox, as runc's shim groups a pod.
func (manager) Start(ctx context.Context, id string, opts shim.StartOpts) (_ string, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	group := id
	// Start runs in the bundle.
	spec, err := readSpec(".")
	if err != nil {
		return "", err
	}
	if sb := spec.Annotations[annotationSandboxID]; sb != "" {
		group = sb
	}
	address, err := shim.SocketAddress(ctx, opts.Address, group)
	if err != nil {
		return "", err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			// The pod's server, or one for id (containerd retried).
			return address, shim.WriteAddress("address", address)
		}
		if err := shim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
	}
	// The server inherits the socket; this process's copy closes without
	// unlinking it.
	socket.SetUnlinkOnClose(false)
	defer socket.Close()
	defer func() {
		if retErr != nil {
			shim.RemoveSocket(address)
		}
	}()
	if err := shim.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	// argv[0] is the shim's name even when the binary is fcvm reached
	// through a symlink: fcvm dispatches on it.
	cmd := &exec.Cmd{Path: self, Args: append([]string{BinaryName}, args...), Env: os.Environ(),
		ExtraFiles: []*os.File{f}, SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	if cmd.Dir, err = os.Getwd(); err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start shim server: %w", err)
	}
	go cmd.Wait()
	return address, nil
}

// Stop is `shim delete`: containerd calls it when the server is gone (it
// died, or its task failed to start) to reclaim what it left. It runs in
// the bundle directory.
func (manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	eng, _, err := newEngine(os.Stderr)
	if err != nil {
		return shim.StopStatus{}, err
	}
	if err := eng.Remove(vmName(ns, id), true); err != nil && !isNotFound(err) {
		return shim.StopStatus{}, fmt.Errorf("remove VM of %s: %w", id, err)
	}
	// A pod's container shares its sandbox's server: the address file
	// names the sandbox's socket, which the sandbox's own delete removes.
	if spec, err := readSpec("."); err == nil && spec.Annotations[annotationCRIType] == criContainer {
		return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(syscall.SIGKILL)}, nil
	}
	// A server killed outright left its socket behind.
	if address, err := shim.ReadAddress("address"); err == nil {
		if err := shim.RemoveSocket(address); err != nil && !errors.Is(err, os.ErrNotExist) {
			return shim.StopStatus{}, fmt.Errorf("remove shim socket of %s: %w", id, err)
		}
	}
	if cwd, err := os.Getwd(); err == nil {
		if err := mount.UnmountAll(filepath.Join(cwd, "rootfs"), 0); err != nil {
			return shim.StopStatus{}, fmt.Errorf("unmount rootfs of %s: %w", id, err)
		}
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(syscall.SIGKILL)}, nil
}
