// Package state keeps one record per VM on the host, so that every fcvm
// command (run, ls, inspect, stop, rm, gc) sees the same VMs even though
// there is no daemon: each VM's supervisor process writes its record, and
// the other commands read it.
//
// A [Store] is a directory (datadir.Dirs.VMs()) with one subdirectory per VM,
// named by the VM's 64-hex-digit ID, holding record.json and whatever else
// the VM owns (disks, logs). A VM is found by full ID, exact name or a
// unique ID prefix of at least 3 characters, as in podman.
//
// # Atomicity
//
// A record is written to a temporary file in the same directory, fsynced,
// renamed over record.json and the directory fsynced, so a reader or a crash
// sees the old record or the new one, never half of one. A new VM is built in
// a hidden staging directory and renamed into place, so a VM directory
// without a record never appears. Remove renames the directory to a hidden
// trash name before deleting it, so a half-deleted VM is never listed.
// Names starting with "." are the store's own; [Store.Sweep] deletes what a
// crash left of them.
//
// # Locking
//
// Locks are flock(2) locks, so they are released when the process holding
// them dies, and they work across processes as well as goroutines.
// [Store.Create] holds the store lock (on the store directory) while it
// checks that the name is free and moves the new VM into place, so two
// concurrent creates with one name never both win. [Store.Update] and
// [Store.Remove] hold the VM's lock (on its directory), so read-modify-write
// cycles from different processes never lose an update. Readers ([Store.Get],
// [Store.List]) take no lock: atomic renames are enough for them. Lock order
// is store, then VM; nothing takes the store lock while holding a VM lock.
//
// # Liveness
//
// A record names its supervisor and VMM by [Process]: a PID plus the
// process's start time in clock ticks since boot (field 22 of
// /proc/PID/stat). [Process.Alive] is true only if that PID exists, is not a
// zombie, and started at that time, so a PID the kernel has handed to an
// unrelated process is never mistaken for a live VM. The start time has the
// resolution of a clock tick (10 ms); a PID reused within one tick would
// fool it, which needs the whole PID space to wrap in 10 ms.
// [Process.Signal] opens a pidfd before it checks the start time and
// signals through the pidfd, so a PID reused between the check and the
// signal is never signalled either.
//
// A record in status starting, running or stopping whose supervisor is not
// alive is [StatusDead]: [Record.Effective] computes that, it is never
// stored. Dead VMs are what fcvm rm and fcvm gc reclaim.
package state
