// Package fusepipe shares a host directory with a guest over any byte
// stream: the host runs a Server on the directory, the guest mounts it
// with FUSE through Mount. In fcvm the stream is one yamux stream of the
// host-guest channel and each `-v HOST:GUEST[:ro]` is one connection; in
// tests it is a Unix socket pair on the host, with a real FUSE mount.
//
// Host side:
//
//	srv, err := fusepipe.NewServer("/srv/data", fusepipe.ServerOptions{ReadOnly: ro, Log: log})
//	defer srv.Close()
//	err = srv.ServeConn(ctx, conn) // blocks; one connection is one mount
//
// Guest side:
//
//	c, err := fusepipe.Mount(conn, "/mnt/data", fusepipe.MountOptions{Log: log})
//	defer c.Unmount()
//	c.Wait() // until unmounted
//
// # Protocol
//
// Frames are length-prefixed and carry a request ID, so many requests are
// in flight at once and replies come back in any order. Each side sends a
// hello first with the protocol Version; peers of different versions
// refuse each other. Node IDs are the server's: the guest kernel's inode
// numbers for FUSE are the server's table keys, and FORGET gives them
// back. Forget, release and interrupt are one-way.
//
// # Confinement
//
// The guest is not trusted. Every node the server knows is an O_PATH
// descriptor reached from the shared directory one plain name at a time
// (openat2 with RESOLVE_BENEATH, no symlinks followed, no "..", no "/"), and
// every operation is relative to such descriptors. Symlinks are stored
// and read back but never followed on the host: the guest kernel resolves
// them inside the guest. Hard links and renames take both ends from the
// node table, so neither can name anything outside. No device node,
// FIFO or socket is ever made on the host, and those found there are
// never opened, by OPEN or by a CREATE that finds the name taken. The server's
// ReadOnly is enforced on the host whatever the guest mounts: no host
// file is opened for writing and no lock is taken on one.
//
// # Ownership and modes
//
// Files are touched with the server process's own credentials, and
// every file the guest makes stays owned by the server's user on the
// host. What the guest sees of a file's owner, group and mode is kept in
// the xattr user.containers.override_stat, in the format rootless podman
// and fuse-overlayfs use ("UID:GID:0MODE:TYPE", e.g. "1000:1000:04755:file"),
// so the same directory reads the same under either:
//
//   - CREATE, MKDIR and MKNOD record the requesting guest user and group
//     (the parent's group, and for directories its set-group-ID bit, if
//     the parent is set-group-ID) and the mode the guest kernel passes
//     (umask applied).
//   - chmod and chown change only the override. The host file gets the
//     guest's read, write and execute bits, at least u+rw (u+rwx for
//     directories) so the server can use it, and never a set-user-ID,
//     set-group-ID or sticky bit.
//   - GETATTR, LOOKUP and READDIRPLUS report the override where there is
//     one, and the host's own stat otherwise (files made on the host).
//     An override is written only where the host stat would say
//     something else: a root guest on a server running as root leaves
//     none. The server rereads one only when the file's ctime moves, so
//     an override changed on the host shows up like any attribute.
//   - FIFOs, sockets and device nodes the guest makes are empty regular
//     files on the host whose override gives their type (and device
//     number: "char-1-3"); the guest kernel runs FIFOs and sockets, and
//     Mount mounts nodev, so a device node on a volume opens nothing in
//     any guest, including another VM sharing the directory. (The mount
//     is also nosuid: set-ID bits show but grant nothing in the guest
//     either.)
//   - The guest may set and remove user.* xattrs only (and remove
//     security.capability, which its kernel does on a write); the
//     override itself is hidden from GETXATTR and LISTXATTR. So no file
//     capability, security label or trusted xattr reaches the host.
//   - Symlinks cannot carry user xattrs on Linux: the owner a guest gives
//     one is kept in the server's memory only, and after a server
//     restart the link shows its host owner. Links have no modes.
//   - On a file system without user xattrs the guest sees the host's
//     owner, chown fails with EPERM, and modes are still made harmless.
//
// The guest kernel checks permissions itself (the mount uses
// default_permissions) against these attributes, so guest users get
// POSIX behaviour among themselves: their own files, chmod and chown
// rules, sticky directories, clearing of set-ID bits on write, truncate
// and chown (the kernel sends that as a mode change). The one check it
// leaves to the server, for a CREATE of a name that turned out to exist,
// the server makes against the caller's user and primary group.
//
// # Limits
//
// A connection's cost on the host is bounded by ServerOptions: MaxNodes
// looked-up inodes (one O_PATH descriptor each), MaxHandles open files
// and directories, MaxLockOwners descriptors carrying POSIX locks, and
// MaxLockWaits lock requests waiting at once, besides 256 other requests
// in flight. Past a limit the request fails (ENFILE, ENOLCK) and the
// connection goes on. A READDIR reply is at most 256 KiB whatever the
// guest asks for. A guest keeping more than MaxNodes inodes in its
// caches (a walk over a very large tree) sees ENFILE until its kernel
// forgets some.
//
// # Caching
//
// The guest kernel caches attributes and names for AttrTimeout and
// EntryTimeout (1s by default), "no such file" for NegativeTimeout, file
// pages across opens until it sees the host change mtime or size, and
// directory listings until the directory's mtime changes. The client
// itself remembers for AttrTimeout that a file has no security.capability
// xattr, which the kernel asks before every write(2). Host-side changes
// therefore show up within about a second. By default every
// write(2) reaches the host before it returns. MountOptions.Writeback
// lets the kernel cache writes instead (much faster small writes), at the
// price of no longer seeing host-side changes to files the guest has
// cached: use it for directories only the guest writes. fsync(2) always
// reaches the host disk.
//
// # Failure
//
// When the connection breaks, or the host stays silent for
// MountOptions.Timeout (10s by default, checked with pings), every request
// in flight and every later one fails with EIO; nothing hangs. The mount
// stays until Unmount, which works once no file on it is open.
// Server.ServeConn closes every descriptor the connection opened when it
// ends, which also drops the guest's locks.
//
// # Locks
//
// flock(2) and POSIX locks are real host locks: flock on the host's open
// file, POSIX locks as open file description locks, one per guest lock
// owner and file, so guest processes conflict with each other and with
// host processes as they would on a local disk. Waiting for a lock polls
// the host (up to every 20ms, less often with many waiters), so an
// interrupted waiter stops promptly; waiters have their own budget
// (MaxLockWaits), so the connection keeps answering pings and other
// requests while they wait. A read-only share takes no host locks: its
// mount keeps flock and POSIX locks in the guest kernel, where they work
// between guest processes but not against host processes.
package fusepipe
