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
// node table, so neither can name anything outside. Device nodes cannot
// be created, and FIFOs and sockets are never opened on the host. The
// server's ReadOnly is enforced on the host whatever the guest mounts.
// Files are touched with the server process's own credentials; the guest
// kernel checks permissions against the guest's users (default_permissions).
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
// the host (up to every 20ms), so an interrupted waiter stops promptly.
package fusepipe
