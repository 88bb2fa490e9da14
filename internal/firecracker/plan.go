package firecracker

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fcvm/fcvm/internal/vmm"
)

const (
	// ChannelPort is the vsock port fc-agent listens on for the host-guest
	// channel.
	ChannelPort = 1024
	// GuestCID is the guest's vsock context ID. Every VM has its own vsock
	// device, so one fixed CID serves all of them (and their clones).
	GuestCID = 3
	// IfaceID is the Firecracker ID of the guest's one network interface.
	IfaceID = "eth0"
	// BaseBootArgs start every guest's kernel command line: serial console,
	// reboot (and so SendCtrlAltDel) exits Firecracker, no PCI probing.
	BaseBootArgs = "console=ttyS0 reboot=k panic=1 pci=off"
	// DiskOrderParam is the kernel parameter naming the disks in the order
	// the guest sees them (vda, vdb, ...): "fcvm.disks=base,upper,image".
	// Firecracker's virtio-block serial is derived from the backing file's
	// device and inode numbers, not from drive_id, so a firecracker guest
	// cannot find its disks by serial and must use this order instead.
	DiskOrderParam = "fcvm.disks"

	// Snapshot file names inside a snapshot directory.
	SnapshotStateFile = "vmstate"
	SnapshotMemFile   = "memory"

	apiSocketName = "firecracker.sock"
	vsockName     = "vsock.sock"
	logName       = "firecracker.log"
	logFIFOName   = "firecracker.log.fifo"
	metricsName   = "firecracker.metrics"
)

// DiskOrder returns the disk IDs in the order the guest enumerates them.
func DiskOrder(cfg vmm.Config) []string {
	ids := make([]string, len(cfg.Disks))
	for i, d := range cfg.Disks {
		ids[i] = d.ID
	}
	return ids
}

// BootArgs returns the kernel command line for cfg.
func BootArgs(cfg vmm.Config) string {
	args := BaseBootArgs
	if len(cfg.Disks) > 0 {
		args += " " + DiskOrderParam + "=" + strings.Join(DiskOrder(cfg), ",")
	}
	if c := strings.TrimSpace(cfg.Cmdline); c != "" {
		args += " " + c
	}
	return args + " " + vmm.ChannelParam + "=vsock"
}

// plan is where each file lives, as the host sees it and as Firecracker
// sees it. Outside a jail the two are the same path; inside one,
// Firecracker sees "/name" and the host sees jailRoot/name, and the host
// file is linked in.
type plan struct {
	jailRoot string
	runtime  string
	links    []link
}

// link puts a host file into the jail.
type link struct {
	src, dst string
	// writable files are the VM's own and must be linked, never copied:
	// a copy would take the guest's writes away from the real file.
	writable bool
}

func newPlan(cfg vmm.Config, jailRoot string) *plan {
	return &plan{jailRoot: jailRoot, runtime: cfg.RuntimeDir}
}

// file returns the path Firecracker is given for host file src, known in
// the jail as name.
func (p *plan) file(src, name string, writable bool) string {
	if p.jailRoot == "" {
		return src
	}
	p.links = append(p.links, link{src: src, dst: filepath.Join(p.jailRoot, name), writable: writable})
	return "/" + name
}

// own returns the (VM, host) paths of a file Firecracker creates itself:
// a socket or log.
func (p *plan) own(name string) (vm, host string) {
	if p.jailRoot == "" {
		h := filepath.Join(p.runtime, name)
		return h, h
	}
	return "/" + name, filepath.Join(p.jailRoot, name)
}

// host maps a path Firecracker was given back to the host's view.
func (p *plan) host(vmPath string) string {
	if p.jailRoot == "" {
		return vmPath
	}
	return filepath.Join(p.jailRoot, vmPath)
}

// checkConfig refuses what no driver could run and the values of cfg and
// o that Firecracker would answer with a 400 half way through a boot,
// naming the field. The contract tests check that every request the driver
// builds from values that pass here validates against Firecracker's spec.
func checkConfig(cfg vmm.Config, o *Options) error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("config %s: "+format, append([]any{field}, a...)...))
	}
	if cfg.VCPUs < 1 || cfg.VCPUs > 32 {
		bad("vcpu_count", "%d: want 1 to 32", cfg.VCPUs)
	}
	if o.LogLevel != "" && !slices.Contains(logLevels, strings.ToLower(o.LogLevel)) {
		bad("logger.level", "%q: want one of Error, Warning, Info, Debug, Trace, Off", o.LogLevel)
	}
	for _, id := range slices.Sorted(maps.Keys(o.DiskRateLimits)) {
		checkRateLimiter(bad, "drive "+id+" rate_limiter", o.DiskRateLimits[id])
	}
	checkRateLimiter(bad, "network rx_rate_limiter", o.NetRxRateLimit)
	checkRateLimiter(bad, "network tx_rate_limiter", o.NetTxRateLimit)
	if b := o.Balloon; b != nil && (b.AmountMiB < 0 || b.StatsPollingIntervalS < 0) {
		bad("balloon", "amount_mib %d, stats_polling_interval_s %d: want >= 0", b.AmountMiB, b.StatsPollingIntervalS)
	}
	if cfg.RuntimeDir == "" {
		bad("RuntimeDir", "empty")
	} else if len(filepath.Join(cfg.RuntimeDir, apiSocketName)) > 107 {
		bad("RuntimeDir", "%q is too long for a Unix socket path (107 bytes): use a shorter FCVM_RUNTIME_DIR", cfg.RuntimeDir)
	}
	if cfg.Kernel == "" {
		bad("Kernel", "empty: run fcvm setup")
	}
	seen := map[string]bool{}
	for i, d := range cfg.Disks {
		field := fmt.Sprintf("Disks[%d].ID", i)
		switch {
		case d.ID == "" || len(d.ID) > 20:
			bad(field, "%q must be 1 to 20 bytes", d.ID)
		case strings.Trim(d.ID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "":
			bad(field, "%q may hold only letters, digits, '_' and '-'", d.ID)
		case seen[d.ID]:
			bad(field, "%q used twice", d.ID)
		}
		seen[d.ID] = true
		if d.Path == "" {
			bad(fmt.Sprintf("Disks[%d].Path", i), "empty")
		}
	}
	// The spec sets no bounds on these; Firecracker does.
	if cfg.MemoryMiB < 1 {
		bad("MemoryMiB", "%d: want at least 1", cfg.MemoryMiB)
	}
	if cfg.Net != nil && cfg.Net.TAP == "" {
		bad("Net.TAP", "empty")
	}
	if cfg.Net != nil && cfg.Net.MAC != "" {
		if hw, err := net.ParseMAC(cfg.Net.MAC); err != nil || len(hw) != 6 {
			bad("Net.MAC", "%q is not a MAC address like 06:00:ac:10:00:02", cfg.Net.MAC)
		}
	}
	return errors.Join(errs...)
}

// logLevels are Firecracker's, which it matches without regard to case.
var logLevels = []string{"error", "warning", "info", "debug", "trace", "off"}

func checkRateLimiter(bad func(field, format string, a ...any), field string, r *RateLimiter) {
	if r == nil {
		return
	}
	for i, b := range []*TokenBucket{r.Bandwidth, r.Ops} {
		if b == nil {
			continue
		}
		name := [...]string{"bandwidth", "ops"}[i]
		if b.Size < 0 || b.RefillTimeMs < 0 || (b.OneTimeBurst != nil && *b.OneTimeBurst < 0) {
			bad(field+"."+name+".size", "size %d, refill_time %d: want >= 0", b.Size, b.RefillTimeMs)
		}
	}
}

// bootRequests is the whole pre-boot configuration and the start, in the
// order Firecracker requires: the logger first so that every later failure
// is logged, every device before InstanceStart, and MMDS data only once
// MMDS is configured.
func bootRequests(cfg vmm.Config, o *Options, p *plan) ([]Request, error) {
	c, err := vmConfig(cfg, o, p)
	if err != nil {
		return nil, err
	}
	reqs := []Request{PutLogger(*c.Logger)}
	if c.Metrics != nil {
		reqs = append(reqs, PutMetrics(*c.Metrics))
	}
	reqs = append(reqs, PutMachineConfig(*c.MachineConfig), PutBootSource(*c.BootSource))
	for _, d := range c.Drives {
		reqs = append(reqs, PutDrive(d))
	}
	for _, n := range c.NetworkInterfaces {
		reqs = append(reqs, PutNetworkInterface(n))
	}
	if c.MMDSConfig != nil {
		reqs = append(reqs, PutMMDSConfig(*c.MMDSConfig), PutMMDS(o.BootPlan))
	}
	reqs = append(reqs, PutVsock(*c.Vsock))
	if c.Entropy != nil {
		reqs = append(reqs, PutEntropy(*c.Entropy))
	}
	if c.Balloon != nil {
		reqs = append(reqs, PutBalloon(*c.Balloon))
	}
	return append(reqs, Action(ActionInstanceStart)), nil
}

// vmConfig is the VM's configuration as one document: bootRequests sends
// it piece by piece, --config-file mode writes it to a file.
func vmConfig(cfg vmm.Config, o *Options, p *plan) (*VMConfig, error) {
	if o.BootPlan != nil && cfg.Net == nil {
		return nil, errors.New("config Options.BootPlan: MMDS needs a network interface (cfg.Net); pass the plan over the channel instead")
	}
	if o.BootPlan != nil && !json.Valid(o.BootPlan) {
		return nil, errors.New("config Options.BootPlan: not valid JSON")
	}
	logVM, _ := p.own(logFIFOName)
	c := &VMConfig{
		Logger: &Logger{LogPath: logVM, Level: o.logLevel(), ShowLevel: true},
		MachineConfig: &MachineConfig{
			VCPUCount:       cfg.VCPUs,
			MemSizeMiB:      cfg.MemoryMiB,
			TrackDirtyPages: o.TrackDirtyPages,
		},
		BootSource: &BootSource{
			KernelImagePath: p.file(cfg.Kernel, "vmlinux", false),
			BootArgs:        BootArgs(cfg),
		},
	}
	if o.Metrics {
		m, _ := p.own(metricsName)
		c.Metrics = &Metrics{MetricsPath: m}
	}
	if cfg.Initrd != "" {
		c.BootSource.InitrdPath = p.file(cfg.Initrd, "initrd", false)
	}
	for i, d := range cfg.Disks {
		c.Drives = append(c.Drives, Drive{
			DriveID:      d.ID,
			PathOnHost:   p.file(d.Path, fmt.Sprintf("drive%d-%s", i, d.ID), !d.ReadOnly),
			IsRootDevice: false, // the initramfs mounts the disks itself
			IsReadOnly:   d.ReadOnly,
			RateLimiter:  o.DiskRateLimits[d.ID],
		})
	}
	if cfg.Net != nil {
		c.NetworkInterfaces = []NetworkInterface{{
			IfaceID:       IfaceID,
			HostDevName:   cfg.Net.TAP,
			GuestMAC:      cfg.Net.MAC,
			RxRateLimiter: o.NetRxRateLimit,
			TxRateLimiter: o.NetTxRateLimit,
		}}
		if o.BootPlan != nil {
			c.MMDSConfig = &MMDSConfig{Version: "V2", NetworkInterfaces: []string{IfaceID}}
		}
	}
	vs, _ := p.own(vsockName)
	c.Vsock = &Vsock{GuestCID: GuestCID, UDSPath: vs}
	if o.Entropy {
		c.Entropy = &EntropyDevice{}
	}
	c.Balloon = o.Balloon
	return c, nil
}

// RestoreOptions choose how a snapshot is loaded.
type RestoreOptions struct {
	// Dir holds SnapshotStateFile and, for the File backend, the memory
	// file MemFile (SnapshotMemFile when empty).
	Dir     string
	MemFile string
	// UffdSocket, when set, is the Unix socket of a memory server (fcvm
	// snapshot serve) that serves the guest's pages; otherwise the memory
	// file is mapped privately.
	UffdSocket string
	// TrackDirtyPages allows Diff snapshots of the restored VM.
	TrackDirtyPages bool
	// Paused leaves the restored VM paused.
	Paused bool
}

func (ro *RestoreOptions) memFile() string {
	if ro.MemFile == "" {
		return SnapshotMemFile
	}
	return ro.MemFile
}

// restoreRequests loads a snapshot into a fresh process (after GET
// /version, which the driver sends first: vsock_override needs Firecracker
// 1.16). Only the logger and metrics may precede the load.
//
// The snapshot names the original VM's disk files. In a jail the clone's
// disks are linked in under the same names, so the load can resume the VM
// at once. Outside one the VM is loaded paused, each drive is pointed at the
// clone's own file (PATCH /drives), and only then resumed, so the clone
// never writes to the original's disks.
func restoreRequests(cfg vmm.Config, o *Options, ro RestoreOptions, p *plan) ([]Request, error) {
	if ro.Dir == "" {
		return nil, errors.New("restore: empty snapshot dir")
	}
	if o.BootPlan != nil && cfg.Net == nil {
		return nil, errors.New("config Options.BootPlan: MMDS needs a network interface (cfg.Net)")
	}
	logVM, _ := p.own(logFIFOName)
	reqs := []Request{PutLogger(Logger{LogPath: logVM, Level: o.logLevel(), ShowLevel: true})}
	if o.Metrics {
		m, _ := p.own(metricsName)
		reqs = append(reqs, PutMetrics(Metrics{MetricsPath: m}))
	}
	load := SnapshotLoad{
		SnapshotPath:    p.file(filepath.Join(ro.Dir, SnapshotStateFile), SnapshotStateFile, false),
		TrackDirtyPages: ro.TrackDirtyPages,
	}
	if ro.UffdSocket != "" {
		load.MemBackend = MemBackend{BackendType: MemBackendUffd, BackendPath: p.file(ro.UffdSocket, "uffd.sock", false)}
	} else {
		load.MemBackend = MemBackend{BackendType: MemBackendFile, BackendPath: p.file(filepath.Join(ro.Dir, ro.memFile()), SnapshotMemFile, false)}
	}
	if cfg.Net != nil {
		load.NetworkOverrides = []NetworkOverride{{IfaceID: IfaceID, HostDevName: cfg.Net.TAP}}
	}
	vs, _ := p.own(vsockName)
	load.VsockOverride = &VsockOverride{UDSPath: vs}

	var patches []Request
	for i, d := range cfg.Disks {
		path := p.file(d.Path, fmt.Sprintf("drive%d-%s", i, d.ID), !d.ReadOnly)
		if p.jailRoot == "" {
			patches = append(patches, PatchDrive(PartialDrive{DriveID: d.ID, PathOnHost: path}))
		}
	}
	load.ResumeVM = !ro.Paused && len(patches) == 0
	reqs = append(reqs, LoadSnapshot(load))
	reqs = append(reqs, patches...)
	if o.BootPlan != nil {
		// The data store is not part of the snapshot.
		reqs = append(reqs, PutMMDS(o.BootPlan))
	}
	if !ro.Paused && !load.ResumeVM {
		reqs = append(reqs, PatchVM(VMResumed))
	}
	return reqs, nil
}

// snapshotRequests pause, write and resume.
func snapshotRequests(statePath, memPath string, typ SnapshotType) []Request {
	return []Request{
		PatchVM(VMPaused),
		CreateSnapshot(SnapshotCreate{SnapshotPath: statePath, MemFilePath: memPath, SnapshotType: typ}),
		PatchVM(VMResumed),
	}
}

// touch creates a file Firecracker will open but not create (its log and
// metrics files must exist on older versions).
func touch(path string, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	if uid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
