// Package firecracker is the vmm.Driver for Firecracker: a typed client
// for its HTTP API on a Unix socket, the process that serves it, and the
// sequences of calls that boot, snapshot and restore a VM.
//
// The API it speaks is the one in fcspec/firecracker.yaml (API 1.17). The
// contract tests validate every request the driver can send against that
// file (package fcspec); at run time the driver checks only the values a
// caller supplies that Firecracker would refuse (vCPU count, log level,
// rate limits, disk IDs...), so a bad config fails at once with the field
// named, and nothing is left behind, without an OpenAPI engine in fcvm.
//
// # Booting
//
// Start runs firecracker --api-sock RuntimeDir/firecracker.sock, waits
// for the socket, then sends, in order: logger, metrics (optional),
// machine-config, boot-source, one drive per disk in cfg.Disks order,
// the network interface, MMDS config and data (when Options.BootPlan is
// set), vsock, entropy and balloon (optional), and InstanceStart. With
// Options.ConfigFile the same configuration goes into a --config-file
// document instead and only the MMDS data is sent.
//
// The kernel command line is BaseBootArgs, then DiskOrderParam, then
// cfg.Cmdline. Firecracker's virtio-block serial is made from the backing
// file's device and inode numbers, not from drive_id, so a guest cannot
// find its disks by serial: it must read DiskOrderParam ("fcvm.disks=
// base,upper,image" means /dev/vda is base, and so on).
//
// # Host-guest channel
//
// The vsock device's Unix socket is RuntimeDir/vsock.sock. DialChannel
// connects there and speaks Firecracker's handshake (CONNECT ChannelPort,
// OK n) and returns a plain net.Conn.
//
// # Processes
//
// One goroutine, locked to its OS thread for the child's whole life,
// starts Firecracker and owns its Wait: the parent-death signal (SIGKILL)
// is tied to the forking thread, and cfg.NetNS is entered on that thread
// only. Stop sends Ctrl-Alt-Del (guest reboot, which with reboot=k ends
// Firecracker) and lets os/exec kill the process after the grace period
// (exec.Cmd.Cancel and WaitDelay). The serial console goes through a
// pipe into cfg.ConsoleLog, which rotates at rotatelog.DefaultLimit so a
// guest cannot fill the disk; Firecracker's log (PUT /logger names a
// FIFO, inside the jail when jailed) and its stderr are copied into
// RuntimeDir/firecracker.log, capped the same way, and its last lines are
// added to errors.
//
// In jailer mode (Options.Jailer) the jailer chroots, drops privileges,
// applies cgroups and joins the netns, and every file is hard-linked into
// the jail. The parent-death signal does not survive the jailer's
// privilege drop (the kernel clears it on a credential change): a jailed
// Firecracker outlives a supervisor killed with SIGKILL, and must be
// reaped by fcvm gc.
//
// # Snapshots
//
// Machine.Snapshot pauses, writes SnapshotStateFile and SnapshotMemFile
// (moved out of the jail when jailed), runs the caller's whilePaused hook
// (fcvm copies the disks there), and resumes even when a step fails; it is
// called by the supervisor that owns the Machine, over the API socket it
// already holds. RestoreMachine loads a snapshot
// with the File or Uffd memory backend, pointing the network interface at
// the clone's TAP (network_overrides) and the vsock at the clone's own
// socket (vsock_override, Firecracker 1.16 or newer). Outside a jail the
// clone is loaded paused and its drives are repointed at the clone's own
// files before it resumes, so it never writes to the original's disks.
//
// # Errors
//
// A refused API call is an *APIError with Firecracker's fault_message. A
// host that cannot run Firecracker gets an *UnavailableError from
// Available, listing every missing piece with its fix; it wraps
// vmm.ErrUnavailable.
package firecracker
