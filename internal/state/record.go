package state

import "time"

// Status is where a VM is in its life. Only the supervisor moves a record
// from one status to the next; see [Record.Effective] for what readers
// should show.
type Status string

const (
	// StatusCreated: the record exists; no supervisor has started the VM.
	StatusCreated Status = "created"
	// StatusStarting: the supervisor is preparing disks and network or
	// booting the guest.
	StatusStarting Status = "starting"
	// StatusRunning: the container is running in the guest.
	StatusRunning Status = "running"
	// StatusPaused: the VMM has stopped the guest's vCPUs (fcvm pause);
	// the supervisor is alive and unpause resumes it.
	StatusPaused Status = "paused"
	// StatusStopping: the supervisor is stopping the VM and cleaning up.
	StatusStopping Status = "stopping"
	// StatusExited: the VM is gone; ExitCode (when known) and Error say how.
	StatusExited Status = "exited"
	// StatusDead is never stored: Effective reports it for a VM whose
	// record says it is live but whose supervisor is not.
	StatusDead Status = "dead"
)

// Live reports whether s is one of the statuses a supervisor must be alive
// for: starting, running, paused or stopping.
func (s Status) Live() bool {
	return s == StatusStarting || s == StatusRunning || s == StatusPaused || s == StatusStopping
}

// Port is one published port.
type Port struct {
	HostIP    string `json:"host_ip"` // "" means all addresses
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
	Proto     string `json:"proto"` // tcp or udp
}

// Volume is one host directory shared into the guest.
type Volume struct {
	Host     string `json:"host"`
	Guest    string `json:"guest"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Network is how the VM is attached.
type Network struct {
	Mode    string `json:"mode"` // rootless, bridged or none
	HostIP  string `json:"host_ip,omitempty"`
	GuestIP string `json:"guest_ip,omitempty"`
	Netns   string `json:"netns,omitempty"`
	TAP     string `json:"tap,omitempty"`
	Ports   []Port `json:"ports,omitempty"`
}

// Record is everything fcvm knows about one VM. It is stored as JSON with
// these snake_case keys; fields are only ever added.
type Record struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Image     string   `json:"image"` // the reference as the user typed it
	ImageID   string   `json:"image_id,omitempty"`
	Cmd       []string `json:"cmd,omitempty"`
	Driver    string   `json:"driver,omitempty"` // qemu or firecracker
	CPUs      int      `json:"cpus,omitempty"`
	MemoryMiB int      `json:"memory_mib,omitempty"`

	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`

	Status   Status `json:"status"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Error    string `json:"error,omitempty"`

	Supervisor Process `json:"supervisor,omitzero"`
	VMM        Process `json:"vmm,omitzero"`

	Detached   bool `json:"detached,omitempty"`
	AutoRemove bool `json:"auto_remove,omitempty"` // --rm

	Dir        string `json:"dir"`                   // per-VM data: disks, logs
	RuntimeDir string `json:"runtime_dir,omitempty"` // sockets

	Network Network           `json:"network,omitzero"`
	Volumes []Volume          `json:"volumes,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Health  string            `json:"health,omitempty"` // "", starting, healthy, unhealthy

	// StopSignal is what stop sends the container first (run
	// --stop-signal; 0: SIGTERM); StopTimeout the seconds stop waits by
	// default (run --stop-timeout; nil: 10).
	StopSignal  int  `json:"stop_signal,omitempty"`
	StopTimeout *int `json:"stop_timeout,omitempty"`
	// Restart is the --restart policy (no, on-failure[:N], always);
	// Restarts counts the restarts the supervisor has made under it.
	Restart  string `json:"restart,omitempty"`
	Restarts int    `json:"restarts,omitempty"`

	Snapshot string `json:"snapshot,omitempty"`  // clones: the snapshot tag
	ServePID int    `json:"serve_pid,omitempty"` // clones: the memory server
}

// Effective is the status to show: the stored one, except that a live
// status whose supervisor is gone is [StatusDead].
func (r *Record) Effective() Status {
	if r.Status.Live() && !r.Supervisor.Alive() {
		return StatusDead
	}
	return r.Status
}

// ShortID is the first 12 characters of the ID, as podman shows it.
func (r *Record) ShortID() string { return shortID(r.ID) }

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
