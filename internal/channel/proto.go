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
}

// Kind names a stream's purpose.
type Kind string

// Stream kinds.
const (
	// KindStart starts the container from a Plan. Starting is idempotent:
	// a second start of a running or finished container only reports its
	// state, so a reconnect never runs anything twice.
	KindStart Kind = "start"
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
)

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
}

// NetPlan is the guest's static network configuration.
type NetPlan struct {
	Address string   `json:"address"` // CIDR, e.g. 10.0.2.2/24
	Gateway string   `json:"gateway"`
	MAC     string   `json:"mac"`
	DNS     []string `json:"dns,omitempty"`
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
