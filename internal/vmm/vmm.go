// Package vmm defines what fcvm asks of a virtual machine monitor, so that
// the firecracker and qemu drivers are interchangeable to the rest of fcvm.
//
// A Driver turns a Config into a running Machine. The core is start, wait
// and stop; abilities only some drivers have (snapshots, restore) are
// separate interfaces found by type assertion.
//
// # Layout shared by every driver
//
// The guest always sees the same devices in the same roles, found by disk
// serial rather than by order: "base" (read-only rootfs), "upper" (the VM's
// writable disk), "image" (the container image, read-only), plus one network
// interface named by the TAP in the VM's namespace and one host-guest
// channel. That sameness is what lets a snapshot of one VM restore as many
// clones.
//
// # Processes
//
// A Machine owns exactly one VMM process. Wait returns once that process has
// exited; Stop asks the guest to power off, and kills the process after the
// grace period. The VMM process is started with a parent-death signal so it
// never outlives the supervisor that started it.
package vmm

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"time"
)

// Disk is one block device given to the guest.
type Disk struct {
	// ID is the serial the guest finds the disk by (at most 20 bytes).
	ID       string
	Path     string
	ReadOnly bool
}

// Net is the guest's one network interface.
type Net struct {
	// TAP is the name of the TAP device, which lives in the VMM's
	// network namespace.
	TAP string
	// MAC is the guest's MAC address.
	MAC string
}

// Config is everything a driver needs to start one VM.
type Config struct {
	// Name identifies the VM in logs and process titles.
	Name string
	// RuntimeDir holds the VM's sockets; it exists and is private.
	RuntimeDir string
	// Kernel is an uncompressed ELF vmlinux (both drivers boot it directly).
	Kernel string
	// Initrd is the initramfs holding fc-agent.
	Initrd string
	// Cmdline is appended to the driver's own kernel arguments.
	Cmdline   string
	VCPUs     int
	MemoryMiB int
	Disks     []Disk
	// Net is nil for a VM without a network interface.
	Net *Net
	// NetNS is the path of the network namespace the VMM runs in ("" for
	// the caller's). Drivers that start their process through StartProcess
	// leave the namespaces to it.
	NetNS string
	// StartProcess, when set, starts the VMM process in place of
	// cmd.Start: the network package uses it to start the VMM inside the
	// VM's namespaces.
	StartProcess func(cmd *exec.Cmd) error
	// ConsoleLog receives the guest's serial console.
	ConsoleLog string
}

// ChannelParam is the kernel command-line parameter that tells fc-agent
// which carrier its host-guest channel uses. Each driver adds it itself
// ("fcvm.channel=serial" for QEMU's virtio-serial port, "fcvm.channel=vsock"
// for Firecracker's vsock), after Config.Cmdline's own parameters.
const ChannelParam = "fcvm.channel"

// Machine is one running VMM process.
type Machine interface {
	// PID is the VMM process's PID.
	PID() int
	// DialChannel connects to the guest's end of the host-guest channel.
	// It may be called again after a connection breaks.
	DialChannel(ctx context.Context) (net.Conn, error)
	// Wait blocks until the VMM process exits and reports how.
	Wait() error
	// Stop powers the guest off, killing the VMM if it is still running
	// after grace. Stop is idempotent and returns once the process is gone.
	Stop(ctx context.Context, grace time.Duration) error
}

// Driver starts VMs with one kind of VMM.
type Driver interface {
	// Name is "qemu" or "firecracker".
	Name() string
	// Available reports nil if the driver can run on this host, or an
	// error saying what is missing and how to fix it.
	Available() error
	// Start boots a VM. The VMM is killed if ctx is cancelled before
	// Start returns.
	Start(ctx context.Context, cfg Config) (Machine, error)
}

// Snapshotter is a Machine that can save its state while running.
type Snapshotter interface {
	// SnapshotSize is at most how many bytes Snapshot writes into dir, so
	// that the caller can check for room before pausing the guest.
	SnapshotSize() (int64, error)
	// Snapshot pauses the guest, writes its device state and memory image
	// into dir, calls whilePaused (when non-nil) while the guest is still
	// paused, where the caller copies the VM's disks consistently with the
	// memory, and resumes the guest whatever happened. It returns the
	// memory image's name in dir, which RestoreOptions.MemFile takes.
	Snapshot(ctx context.Context, dir string, whilePaused func() error) (memFile string, err error)
}

// Pauser is a Machine that can freeze its guest: the VMM stops running
// the vCPUs, so nothing in the guest runs, not even its clock, until
// Resume. Memory and devices stay as they are.
type Pauser interface {
	// Pause stops the vCPUs; it returns once they are stopped.
	Pause(ctx context.Context) error
	// Resume starts them again where they stopped.
	Resume(ctx context.Context) error
}

// RestoreOptions say where a clone's state and memory come from.
type RestoreOptions struct {
	// Dir is the snapshot directory Snapshot wrote.
	Dir string
	// MemFile is the memory image's name in Dir.
	MemFile string
	// UffdSocket, when set, is the Unix socket of a memory server that
	// serves the guest's pages on demand instead of MemFile being mapped.
	// Drivers that cannot use one refuse it with ErrNoMemoryServer.
	UffdSocket string
}

// Restorer is a Driver that can start a VM from a snapshot.
type Restorer interface {
	// Restore starts a VM from the snapshot ro names, with cfg giving the
	// clone's own disks, namespace and sockets and the snapshot's machine
	// size. The VMM is killed if Restore fails.
	Restore(ctx context.Context, cfg Config, ro RestoreOptions) (Machine, error)
}

// MemoryServerRestorer is a Restorer whose clones can take their memory
// from a memory server (RestoreOptions.UffdSocket).
type MemoryServerRestorer interface {
	Restorer
	// RestoresFromMemoryServer reports that Restore takes UffdSocket.
	RestoresFromMemoryServer() bool
}

// ErrNoMemoryServer is wrapped by Restore errors of drivers whose clones
// cannot take their memory from a memory server.
var ErrNoMemoryServer = errors.New("vmm: driver restores memory from the snapshot's file only")

// ErrUnavailable is wrapped by Available errors.
var ErrUnavailable = errors.New("vmm: driver unavailable")
