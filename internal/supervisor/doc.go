// Package supervisor runs one VM from start to teardown. Every running VM
// has exactly one supervisor process: the foreground `fcvm run` itself, or
// the background process `fcvm run -d` leaves behind. It owns the VMM
// process (which dies with it through the parent-death signal), the
// host-guest channel, the container's log and everything the VM made on
// the host, and it removes them when the VM ends.
//
// # Launch
//
// Launch does the host-side work before the guest runs (artifacts, image,
// record, disks, VMM spawn) and times each phase; on any error it removes
// everything it made, so bad input leaves nothing behind.
//
// # Start and restart policies
//
// Relaunch boots a stopped VM again (fcvm start): the same record, upper
// disk and launch.json (plan, health check), a new network and guest boot,
// with this process as its new supervisor. A detached supervisor whose VM
// has a --restart policy calls VM.Next when the container exits, which
// relaunches it in the same process unless the policy, a stop request or
// the supervisor's own end says no. A cold-booted VM is recorded running
// once its container has started, so nothing asks the guest for the
// container before it exists.
//
// # Control socket
//
// The supervisor holds the VM's only channel connection and its only
// vmm.Machine, so other fcvm commands reach the VM through the control
// socket in its runtime dir: exec and other guest streams are passed on to
// the guest, stop and snapshot the supervisor does itself (a snapshot
// pauses the machine it owns, whatever the driver or its jail).
//
// # Drivers
//
// drivers.go is the one file that knows the VMM drivers by name; the rest
// of the package goes through the vmm interfaces (Driver, Snapshotter,
// Restorer).
//
// # The channel
//
// Run dials the guest, hands it the plan, and attaches to the container's
// output. When the session breaks while the VMM lives (a snapshot, a slow
// guest) it dials again and resumes from the last output chunk stored, so
// output is neither lost nor repeated.
//
// # A hostile guest
//
// What the guest sends costs the host a bounded amount. Sessions that keep
// breaking are redialled with a growing pause (channel.Backoff: at once,
// then 10 ms doubling to 2 s), so a guest that closes each one costs a
// handful of dials a second. The serial console is kept by the VMM driver
// in console.log, rotated to console.log.1 at 8 MiB, and a boot error
// shows its last lines read from the last 16 KiB only, with what a
// terminal would act on escaped (package termsafe); a detached
// supervisor's own log, supervisor.log, rotates the same way.
package supervisor
