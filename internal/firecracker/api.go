package firecracker

// The types below mirror the definitions in firecracker.yaml (API 1.17)
// field for field, for the parts fcvm uses. Optional fields are pointers or
// omitempty so that a request carries only what the caller set: Firecracker
// rejects unknown fields, and an explicit zero can mean something different
// from an absent field.

// MachineConfig is PUT /machine-config.
type MachineConfig struct {
	VCPUCount       int    `json:"vcpu_count"`
	MemSizeMiB      int    `json:"mem_size_mib"`
	SMT             bool   `json:"smt,omitempty"`
	TrackDirtyPages bool   `json:"track_dirty_pages,omitempty"`
	HugePages       string `json:"huge_pages,omitempty"` // None, Transparent, 2M
	CPUTemplate     string `json:"cpu_template,omitempty"`
}

// BootSource is PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// TokenBucket is one bucket of a RateLimiter.
type TokenBucket struct {
	Size         int64  `json:"size"`
	RefillTimeMs int64  `json:"refill_time"`
	OneTimeBurst *int64 `json:"one_time_burst,omitempty"`
}

// RateLimiter limits a device by bytes and by operations.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// Drive is PUT /drives/{drive_id} for a virtio-block device.
type Drive struct {
	DriveID      string       `json:"drive_id"`
	PathOnHost   string       `json:"path_on_host"`
	IsRootDevice bool         `json:"is_root_device"`
	IsReadOnly   bool         `json:"is_read_only"`
	CacheType    string       `json:"cache_type,omitempty"` // Unsafe, Writeback
	IOEngine     string       `json:"io_engine,omitempty"`  // Sync, Async
	RateLimiter  *RateLimiter `json:"rate_limiter,omitempty"`
}

// PartialDrive is PATCH /drives/{drive_id}: a new backing file or rate
// limiter for a running VM.
type PartialDrive struct {
	DriveID     string       `json:"drive_id"`
	PathOnHost  string       `json:"path_on_host,omitempty"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// NetworkInterface is PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      string       `json:"guest_mac,omitempty"`
	MTU           int          `json:"mtu,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// PartialNetworkInterface is PATCH /network-interfaces/{iface_id}.
type PartialNetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// Vsock is PUT /vsock.
type Vsock struct {
	GuestCID int    `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// MMDSConfig is PUT /mmds/config.
type MMDSConfig struct {
	Version           string   `json:"version,omitempty"` // V1, V2
	NetworkInterfaces []string `json:"network_interfaces"`
	IPv4Address       string   `json:"ipv4_address,omitempty"`
	IMDSCompat        bool     `json:"imds_compat,omitempty"`
}

// Logger is PUT /logger.
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"` // Error, Warning, Info, Debug, Trace, Off
	ShowLevel     bool   `json:"show_level,omitempty"`
	ShowLogOrigin bool   `json:"show_log_origin,omitempty"`
	Module        string `json:"module,omitempty"`
}

// Metrics is PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// Balloon is PUT /balloon and GET /balloon.
type Balloon struct {
	AmountMiB             int  `json:"amount_mib"`
	DeflateOnOOM          bool `json:"deflate_on_oom"`
	StatsPollingIntervalS int  `json:"stats_polling_interval_s,omitempty"`
	FreePageHinting       bool `json:"free_page_hinting,omitempty"`
	FreePageReporting     bool `json:"free_page_reporting,omitempty"`
}

// BalloonUpdate is PATCH /balloon.
type BalloonUpdate struct {
	AmountMiB int `json:"amount_mib"`
}

// BalloonStats is GET /balloon/statistics (the fields fcvm reads).
type BalloonStats struct {
	TargetPages     int   `json:"target_pages"`
	ActualPages     int   `json:"actual_pages"`
	TargetMiB       int   `json:"target_mib"`
	ActualMiB       int   `json:"actual_mib"`
	FreeMemory      int64 `json:"free_memory,omitempty"`
	TotalMemory     int64 `json:"total_memory,omitempty"`
	AvailableMemory int64 `json:"available_memory,omitempty"`
}

// EntropyDevice is PUT /entropy.
type EntropyDevice struct {
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// ActionType names a PUT /actions action.
type ActionType string

// The actions fcvm sends.
const (
	ActionInstanceStart  ActionType = "InstanceStart"
	ActionSendCtrlAltDel ActionType = "SendCtrlAltDel"
	ActionFlushMetrics   ActionType = "FlushMetrics"
)

type instanceAction struct {
	ActionType ActionType `json:"action_type"`
}

// VMState is the body of PATCH /vm.
type VMState string

// The states PATCH /vm accepts.
const (
	VMPaused  VMState = "Paused"
	VMResumed VMState = "Resumed"
)

type vmBody struct {
	State VMState `json:"state"`
}

// SnapshotType is Full or Diff.
type SnapshotType string

// The snapshot types.
const (
	SnapshotFull SnapshotType = "Full"
	// SnapshotDiff holds only the pages dirtied since the last snapshot; the
	// machine must have been booted (or restored) with dirty page tracking.
	SnapshotDiff SnapshotType = "Diff"
)

// SnapshotCreate is PUT /snapshot/create.
type SnapshotCreate struct {
	SnapshotPath string       `json:"snapshot_path"`
	MemFilePath  string       `json:"mem_file_path"`
	SnapshotType SnapshotType `json:"snapshot_type,omitempty"`
}

// MemBackendType says who provides a restored VM's memory.
type MemBackendType string

// The memory backends.
const (
	// MemBackendFile maps the memory file privately: clones share its
	// pages through the page cache until they write.
	MemBackendFile MemBackendType = "File"
	// MemBackendUffd hands a userfaultfd to the process listening on
	// BackendPath, which serves every page fault.
	MemBackendUffd MemBackendType = "Uffd"
)

// MemBackend is the mem_backend of a snapshot load.
type MemBackend struct {
	BackendType MemBackendType `json:"backend_type"`
	BackendPath string         `json:"backend_path"`
}

// NetworkOverride points a restored interface at another TAP.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride gives a restored vsock device another Unix socket.
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoad is PUT /snapshot/load.
type SnapshotLoad struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       MemBackend        `json:"mem_backend"`
	TrackDirtyPages  bool              `json:"track_dirty_pages,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
}

// InstanceInfo is GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"` // "Not started", "Running", "Paused"
	VMMVersion string `json:"vmm_version"`
}

// Version is GET /version.
type Version struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// VMConfig is GET /vm/config and the document --config-file reads: the
// same keys, so one type serves both.
type VMConfig struct {
	BootSource        *BootSource        `json:"boot-source,omitempty"`
	MachineConfig     *MachineConfig     `json:"machine-config,omitempty"`
	Drives            []Drive            `json:"drives,omitempty"`
	NetworkInterfaces []NetworkInterface `json:"network-interfaces,omitempty"`
	Vsock             *Vsock             `json:"vsock,omitempty"`
	MMDSConfig        *MMDSConfig        `json:"mmds-config,omitempty"`
	Logger            *Logger            `json:"logger,omitempty"`
	Metrics           *Metrics           `json:"metrics,omitempty"`
	Balloon           *Balloon           `json:"balloon,omitempty"`
	Entropy           *EntropyDevice     `json:"entropy,omitempty"`
}

// apiError is Firecracker's error body.
type apiError struct {
	FaultMessage string `json:"fault_message"`
}
