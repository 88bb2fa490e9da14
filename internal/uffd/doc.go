// Package uffd serves a Firecracker snapshot's guest memory to many
// restored VMs (clones) at once, through userfaultfd.
//
// Firecracker restoring with mem_backend {"backend_type": "Uffd"} maps
// its guest memory anonymously, registers it with a userfaultfd, connects
// to the backend_path Unix socket and sends one message: a JSON array of
// regions (base_host_virt_addr, size, offset, page_size and the
// deprecated page_size_kib, which holds bytes too) with the userfaultfd
// attached as SCM_RIGHTS. Nothing else is ever said on the socket. From
// then on every first touch of a guest page blocks in the kernel until
// the server copies the page in from the memory file (UFFDIO_COPY).
//
//	srv, err := uffd.NewServer(uffd.Options{MemFile: mem, Socket: sock, Log: log})
//	if err != nil { ... }
//	go srv.Serve()   // blocks until Close
//	...              // start clones with backend_path = sock
//	srv.Close()      // stops serving and removes sock
//
// # Readiness and lifetime
//
// The socket exists and accepts connections when NewServer returns, so a
// clone may be started then; Serve need not have been scheduled yet.
// Serve blocks; the caller owns its goroutine. Close stops accepting,
// removes the socket, stops every client goroutine and waits for them.
// Firecracker has no way to learn that its handler went away: a clone
// whose next page is missing after Close blocks forever, so stop clones
// before their server.
//
// # Who may connect
//
// A client that hands the server a userfaultfd gets the snapshot's memory
// copied into it, so the socket is the memory file's gate. NewServer makes
// it with mode 0600 whatever the umask (bound in a private directory, its
// mode set, then linked into place), so only the server's user and root
// can connect, and the server checks each client's SO_PEERCRED uid before
// it reads a byte: a client running as neither the server's effective uid
// nor root is refused. Firecracker in a user namespace whose root maps to
// the server's user is seen with the server's uid and is served; one
// jailed under another uid is refused like any other user.
//
// SignalClients signals every client through the pidfd the server holds
// for it, so a client's PID reused by another process after the client
// exits is never signalled.
//
// # Clients
//
// Each client gets its own goroutine that serves its userfaultfd, and a
// watcher that polls a pidfd of the client process (from SO_PEERPIDFD, or
// pidfd_open of the SO_PEERCRED PID) and the server's stop signal. While
// there are no more clients than Ps a client waits for faults in poll(2)
// on its own thread; beyond that in Go's netpoller, so that many clients
// do not mean a thread wake-up per fault. A userfaultfd does not
// report its process's death (the server's copy of the descriptor keeps
// it open), so the pidfd is what notices a clone that exited or was
// killed; its goroutine then logs the client's numbers and frees its
// descriptors without touching the others.
//
// A handshake is refused, with a log line naming the problem, when it is
// not a JSON array of regions, carries no descriptor, several, or one
// that is not a userfaultfd, when a region is empty, misaligned, has a
// page size other than 4 KiB or 2 MiB, lies outside the memory file or
// overlaps another, or when nothing complete arrives within
// Options.HandshakeTimeout. The server carries on serving everyone else.
//
// # Faults and removals
//
// A missing-page fault is served with one UFFDIO_COPY of the whole page
// (4 KiB, or 2 MiB for hugetlbfs regions) from a read-only shared mapping
// of the memory file, so the page cache holds the file once for all
// clients while each clone gets private copies. EEXIST (the page is
// already there) counts as served; EAGAIN (the client's mappings are
// changing) makes the server read the pending event and retry.
//
// When the guest gives memory back (balloon inflation, madvise
// MADV_DONTNEED) the kernel sends UFFD_EVENT_REMOVE. From then on those
// pages fault again and must read as zeros, not as the snapshot, so the
// server remembers removed pages per client and serves them with
// UFFDIO_ZEROPAGE (or a copy of zeros, for huge pages, where
// UFFDIO_ZEROPAGE does not exist).
//
// # Working set
//
// With Options.RecordWorkingSet the server records the order in which
// the first client served without a working set touched the memory file
// and writes it beside the memory file (MemFile + ".ws") when that client
// exits. With Options.PrefetchWorkingSet, later clients get that set
// copied in right after the handshake in 1 MiB UFFDIO_COPY batches, their
// own faults being served between batches. See bench/uffd/README.md for
// what that buys.
//
// # Stats
//
// Stats reports per client the faults served, bytes copied, pages
// prefetched and the fault service time at the 50th and 99th percentile
// (from reading the fault to the copy returning). WriteStats formats
// them; the fcvm command prints them on SIGUSR1. Each client's totals are
// also logged when it exits.
package uffd
