// Package channel is the one protocol between fcvm on the host and fc-agent
// in the guest, whatever carries it: vsock under Firecracker, a
// virtio-serial port under QEMU, a Unix socket in tests.
//
// A connection starts with a handshake (Hello), then carries a yamux
// session. The host opens every stream; each stream starts with one JSON
// Request naming what it is for (run, attach, exec, volume, control...), and
// then carries Frames (stdio, resize, signals, exit status) or, for volumes,
// the raw fuse-pipe protocol.
//
// # Reconnection
//
// The carrier can break under a live guest: vsock connections are reset by
// a snapshot or restore, and a QEMU clone resumes with a fresh socket while
// the guest still holds the original's session state. So a session is
// disposable: either side drops it on any error and the host dials again.
// The handshake resynchronises a byte stream that may hold stale bytes of
// an earlier session: the guest skips input until it sees the Hello's mark
// and magic, and the host skips input until it sees the guest's reply
// carrying the nonce it sent. The host escapes every session byte it sends
// (escape.go), so the mark that starts a Hello never occurs in a session:
// a guest reading a live session knows a new Hello (its restored clone's
// new host) when it sees one, whatever data the session carries. The Hello also carries the host's generation counter,
// which the guest compares with the last one it saw to learn that it was
// restored from a snapshot.
//
// A guest may also break every session on purpose: Backoff paces the
// host's redialling so that this costs the host a few dials a second.
//
// Nothing a user started is tied to a session: the guest keeps the
// container's output with sequence numbers and the host re-attaches from
// the last one it stored, so a reconnect neither loses nor repeats output.
package channel
