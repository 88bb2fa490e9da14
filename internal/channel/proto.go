package channel

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/fcvm/fcvm/internal/termsafe"
)

// Request opens a stream: the host writes it as one frame of JSON, the
// guest answers FrameOK or FrameError.
type Request struct {
	Kind   Kind           `json:"kind"`
	Start  *Plan          `json:"start,omitempty"`
	Attach *AttachRequest `json:"attach,omitempty"`
	Exec   *ExecRequest   `json:"exec,omitempty"`
	Watch  *WatchRequest  `json:"watch,omitempty"`
	Signal int            `json:"signal,omitempty"`
	Volume int            `json:"volume,omitempty"`
	Copy   *CopyRequest   `json:"copy,omitempty"`
	// Container names a pod member (a container a pod VM runs besides
	// its own, see KindStart) for start, attach, exec, signal, status and
	// remove; "" is the VM's own container.
	Container string `json:"container,omitempty"`
}

// Kind names a stream's purpose.
type Kind string

// Stream kinds.
const (
	// KindStart starts the container from a Plan. Starting is idempotent:
	// a second start of a running or finished container only reports its
	// state, so a reconnect never runs anything twice. With
	// Request.Container it starts a pod member: a container in the VM's
	// container's network, IPC and UTS namespaces, its root the read-only
	// image on the disk Plan.Slot names, once that container runs.
	KindStart Kind = "start"
	// KindRemove removes an exited pod member: its runtime state, its
	// root and its mounts, so that its slot disk may take another image.
	KindRemove Kind = "remove"
	// KindAttach streams the container's output from a sequence number,
	// then its exit code; host stdin goes the other way.
	KindAttach Kind = "attach"
	// KindExec runs a command in the container (or the VM).
	KindExec Kind = "exec"
	// KindSignal sends a signal to the container's main process.
	KindSignal Kind = "signal"
	// KindStatus reports the agent's Status.
	KindStatus Kind = "status"
	// KindPoweroff syncs disks and powers the guest off.
	KindPoweroff Kind = "poweroff"
	// KindVolume carries the fuse-pipe protocol for volume N of the plan.
	KindVolume Kind = "volume"
	// KindWatch streams changes under a directory of the container as
	// FrameStdout frames of WatchEvent JSON, until the host closes the
	// stream or the directory goes (FrameExit).
	KindWatch Kind = "watch"
	// KindCopyOut archives a path of the container (Copy.Path): the
	// reply's payload is a CopyInfo, then the tar stream comes as
	// FrameStdout frames, ended by FrameExit (0) or FrameError.
	KindCopyOut Kind = "copy-out"
	// KindCopyIn extracts a tar stream into the container at Copy.Path:
	// after the reply the host sends it as FrameStdin frames and
	// FrameStdinEOF, and the guest ends with FrameExit (0) or FrameError.
	KindCopyIn Kind = "copy-in"
	// KindTop lists the container's processes: the reply's payload is a
	// []Process.
	KindTop Kind = "top"
	// KindStats samples the guest's counters: the reply's payload is a
	// GuestStats.
	KindStats Kind = "stats"
)

// CopyRequest names what KindCopyOut and KindCopyIn copy. Paths are the
// container's, resolved in its root: nothing outside it is reached.
type CopyRequest struct {
	Path string `json:"path"`
	// Copy in: the stream's top-level name (SrcBase, or "." for the
	// contents of a directory, cp's SRC/.) and whether it is a directory.
	// A stream (cp - NAME:DIR) is extracted into Path, a directory, as
	// it is.
	SrcBase string `json:"src_base,omitempty"`
	SrcDir  bool   `json:"src_dir,omitempty"`
	Stream  bool   `json:"stream,omitempty"`
}

// CopyInfo describes the path a KindCopyOut archives.
type CopyInfo struct {
	Dir bool `json:"dir"`
}

// Process is one process of the container, as top shows it.
type Process struct {
	PID     int     `json:"pid"`  // in the container's PID namespace
	PPID    int     `json:"ppid"` // 0 when the parent is outside it
	UID     int     `json:"uid"`
	User    string  `json:"user,omitempty"` // from the container's passwd
	Elapsed float64 `json:"elapsed"`        // seconds since it started
	CPU     float64 `json:"cpu"`            // CPU seconds used
	TTY     string  `json:"tty,omitempty"`  // "" when none
	Args    string  `json:"args"`
}

// GuestStats are the guest's counters at one moment.
type GuestStats struct {
	// CPUBusy and CPUTotal are jiffies over all CPUs since boot.
	CPUBusy  uint64 `json:"cpu_busy"`
	CPUTotal uint64 `json:"cpu_total"`
	CPUs     int    `json:"cpus"`
	// MemTotal and MemUsed (total less available) in bytes.
	MemTotal uint64 `json:"mem_total"`
	MemUsed  uint64 `json:"mem_used"`
	NetRx    uint64 `json:"net_rx"`
	NetTx    uint64 `json:"net_tx"`
	// BlockRead and BlockWrite are the bytes the guest's disks moved.
	BlockRead  uint64 `json:"block_read"`
	BlockWrite uint64 `json:"block_write"`
	// PIDs counts the container's processes.
	PIDs int `json:"pids"`
}

// Plan is what the guest needs to run its container. Image config is
// resolved on the host: the guest only sees flags.
type Plan struct {
	Entrypoint  []string          `json:"entrypoint"`
	Cmd         []string          `json:"cmd"`
	Env         []string          `json:"env,omitempty"`
	Workdir     string            `json:"workdir,omitempty"`
	User        string            `json:"user,omitempty"`
	Interactive bool              `json:"interactive,omitempty"`
	TTY         bool              `json:"tty,omitempty"`
	Rows        uint16            `json:"rows,omitempty"`
	Cols        uint16            `json:"cols,omitempty"`
	Hostname    string            `json:"hostname,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Network     *NetPlan          `json:"network,omitempty"`
	Volumes     []VolumePlan      `json:"volumes,omitempty"`
	// Shape is what run's container flags change (--cap-add, --read-only,
	// ...).
	Shape Shape `json:"shape,omitzero"`
	// ClockUnixNano is the host's clock when it sent the plan; the guest
	// steps its clock to it (guests have no RTC under microvm).
	ClockUnixNano int64 `json:"clock_unix_nano,omitempty"`
	// Slot is a pod member's image disk, by serial (see KindStart).
	Slot string `json:"slot,omitempty"`
	// Limits are a pod member's cgroup limits inside the VM (Kubernetes'
	// container resources); nil for none.
	Limits *Limits `json:"limits,omitempty"`
}

// Limits bound a container's use of the VM, as its cgroup's memory.max
// and cpu.max.
type Limits struct {
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	CPUQuota    int64  `json:"cpu_quota,omitempty"`
	CPUPeriod   uint64 `json:"cpu_period,omitempty"`
}

// NetPlan is the guest's static network configuration.
type NetPlan struct {
	Address string   `json:"address"` // CIDR, e.g. 10.0.2.2/24
	Gateway string   `json:"gateway"`
	MAC     string   `json:"mac"`
	DNS     []string `json:"dns,omitempty"`
	// MTU of the interface, when not the default 1500: a joined
	// namespace's (--network ns:), whose network may carry less.
	MTU int `json:"mtu,omitempty"`
}

// VolumePlan is one volume the guest mounts with FUSE.
type VolumePlan struct {
	Guest    string `json:"guest"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// AttachRequest asks for output from sequence number From on.
type AttachRequest struct {
	From  uint64 `json:"from"`
	Stdin bool   `json:"stdin,omitempty"`
}

// ExecRequest runs a command.
type ExecRequest struct {
	Cmd     []string `json:"cmd"`
	Env     []string `json:"env,omitempty"`
	Workdir string   `json:"workdir,omitempty"`
	User    string   `json:"user,omitempty"`
	Stdin   bool     `json:"stdin,omitempty"`
	TTY     bool     `json:"tty,omitempty"`
	Rows    uint16   `json:"rows,omitempty"`
	Cols    uint16   `json:"cols,omitempty"`
	// InVM runs the command in the VM rather than in the container.
	InVM   bool `json:"in_vm,omitempty"`
	Detach bool `json:"detach,omitempty"`
}

// WatchRequest asks for the changes under a directory of the container.
type WatchRequest struct {
	// Path is absolute in the container; symlinks resolve inside it.
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
}

// WatchEvent is one change: Name is the path relative to the watched
// directory, Op one of the WatchOp values.
type WatchEvent struct {
	Name string  `json:"name"`
	Op   WatchOp `json:"op"`
}

// WatchOp is what happened to a watched path (fsnotify's vocabulary).
type WatchOp string

// Watch operations.
const (
	WatchCreate WatchOp = "create"
	WatchWrite  WatchOp = "write"
	WatchRemove WatchOp = "remove"
	WatchRename WatchOp = "rename"
	WatchChmod  WatchOp = "chmod"
)

// MaxWatchDirs bounds the directories one recursive watch follows (one
// inotify watch each).
const MaxWatchDirs = 1024

// Status is the agent's view of its container.
type Status struct {
	State    string `json:"state"` // created, running, exited
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
	// Generation is the host generation the guest last handshook with.
	Generation uint64 `json:"generation"`
}

// WriteRequest sends r as the opening frame of a stream.
func WriteRequest(w io.Writer, r Request) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	return WriteFrame(w, FrameOK, b)
}

// ReadRequest reads the opening frame of a stream.
func ReadRequest(rd io.Reader) (Request, error) {
	f, err := ReadFrame(rd)
	if err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	if f.Type != FrameOK {
		return Request{}, fmt.Errorf("read request: frame type %d, want %d", f.Type, FrameOK)
	}
	var r Request
	if err := json.Unmarshal(f.Payload, &r); err != nil {
		return Request{}, fmt.Errorf("decode request: %w", err)
	}
	if r.Kind == "" {
		return Request{}, fmt.Errorf("decode request: no kind")
	}
	return r, nil
}

// ReadReply reads the guest's answer to a request: nil for FrameOK (with
// its payload), an error carrying the guest's message for FrameError.
func ReadReply(rd io.Reader) ([]byte, error) {
	f, err := ReadFrame(rd)
	if err != nil {
		return nil, fmt.Errorf("read reply: %w", err)
	}
	switch f.Type {
	case FrameOK:
		return f.Payload, nil
	case FrameError:
		return nil, &GuestError{Msg: string(f.Payload)}
	default:
		return nil, fmt.Errorf("read reply: unexpected frame type %d", f.Type)
	}
}

// GuestError is an error the agent reported. Msg is the guest's text as
// sent; Error escapes what a terminal would act on, since the guest is not
// trusted and the message ends up in front of the user.
type GuestError struct{ Msg string }

func (e *GuestError) Error() string { return "guest: " + termsafe.String(e.Msg) }

// VsockPort is the vsock port fc-agent listens on under Firecracker.
const VsockPort = 1024
