package uffd

import (
	"errors"
	"log/slog"
	"time"
)

// Options configure a Server. MemFile and Socket are required.
type Options struct {
	// MemFile is the guest memory file of a Firecracker snapshot. The
	// server maps it read-only and never writes it.
	MemFile string
	// Socket is the Unix socket path Firecracker connects to (its
	// mem_backend.backend_path). A stale socket nobody listens on is
	// replaced; a live one is an error.
	Socket string
	// Log receives one line per client connect, exit and refusal. Nil
	// discards.
	Log *slog.Logger
	// HandshakeTimeout is how long a client may take between connecting
	// and sending its regions. Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// WorkingSet is the working-set file. Empty means MemFile + ".ws".
	WorkingSet string
	// RecordWorkingSet makes the server write, when the first client
	// served without a working set exits, the order in which it touched
	// the memory file's pages.
	RecordWorkingSet bool
	// PrefetchWorkingSet makes the server copy a recorded working set
	// into each new client right after the handshake, in large batches,
	// while still serving the client's own faults first.
	PrefetchWorkingSet bool
}

// DefaultHandshakeTimeout is HandshakeTimeout's default. Firecracker
// sends its regions right after connecting; seconds mean it is stuck.
const DefaultHandshakeTimeout = 5 * time.Second

func (o *Options) fill() error {
	if o.MemFile == "" {
		return errors.New("uffd: no memory file given")
	}
	if o.Socket == "" {
		return errors.New("uffd: no socket path given")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.WorkingSet == "" {
		o.WorkingSet = o.MemFile + ".ws"
	}
	return nil
}
