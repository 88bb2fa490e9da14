package sandboxapi

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/fcvm/fcvm/internal/engine"
)

// A command started through the API belongs to the server, not to the
// stream that started it: the SDK's handle may disconnect, and
// process.Process/Connect attaches again by PID or tag. The server reads
// the command's output into the process's log whether a stream listens or
// not; what nobody has been sent yet waits there, up to maxBacklog bytes
// (older output goes first), for the next stream. A command ends when it
// exits, is killed, runs past its Connect-Timeout-Ms, or its sandbox goes.

// Limits on what commands may make the server hold.
const (
	// maxProcesses bounds the commands of one sandbox, running or ended
	// and not yet collected: each holds a connection to the VM, a
	// goroutine and a log here.
	maxProcesses = 64
	// maxBacklog bounds the output a process keeps for streams to come.
	maxBacklog = 256 << 10
	// endedKept is how long an ended command whose end no stream has
	// seen stays, so that a client that lost its stream can still
	// collect the output and the exit code with Connect.
	endedKept = time.Minute
	// maxStreams bounds the open streams (commands followed, directories
	// watched) of one sandbox.
	maxStreams = 64
)

// Output kinds of a chunk.
const (
	outStdout = iota
	outStderr
	outPTY
)

// process is a command started through process.Process/Start. Its PID is
// the server's, not the guest's: the SDK only hands it back to us.
type process struct {
	pid   uint32
	tag   string
	cfg   processConfig
	pty   bool
	x     *engine.Exec
	stdin *io.PipeWriter // nil without stdin
	// writing holds a token while SendInput writes to stdin.
	writing chan struct{}

	mu     sync.Mutex // guards the fields below
	chunks []chunk    // output not yet dropped, oldest first
	held   int        // bytes in chunks
	next   uint64     // seq of the next chunk
	sent   uint64     // seq after the last chunk any stream has taken
	done   bool       // the command ended: end or endErr says how
	end    *endEvent
	endErr *connectError
	seen   bool          // a stream has sent the end
	wake   chan struct{} // closed and replaced when output or the end comes
}

type chunk struct {
	seq  uint64
	kind int
	data []byte
}

func newProcess(cfg processConfig, tag string, pty bool, x *engine.Exec) *process {
	return &process{cfg: cfg, tag: tag, pty: pty, x: x, wake: make(chan struct{}), writing: make(chan struct{}, 1)}
}

// add appends output, dropping the oldest beyond maxBacklog: the guest
// never waits for a client.
func (p *process) add(kind int, b []byte) {
	if len(b) == 0 {
		return
	}
	data := append([]byte(nil), b...)
	if len(data) > maxBacklog {
		data = data[len(data)-maxBacklog:]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.chunks = append(p.chunks, chunk{seq: p.next, kind: kind, data: data})
	p.next++
	p.held += len(data)
	for p.held > maxBacklog {
		p.held -= len(p.chunks[0].data)
		p.chunks[0] = chunk{}
		p.chunks = p.chunks[1:]
	}
	p.wakeLocked()
}

// finish records how the command ended.
func (p *process) finish(end *endEvent, e *connectError) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.end, p.endErr = true, end, e
	p.wakeLocked()
}

func (p *process) wakeLocked() {
	close(p.wake)
	p.wake = make(chan struct{})
}

func (p *process) ended() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// cursor is where a new stream starts: after what earlier streams took.
func (p *process) cursor() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// take returns the chunks from seq from on (those still held), and
// whether the command has ended with nothing left to send; wake is
// closed when there is more.
func (p *process) take(from uint64) (cs []chunk, next uint64, over bool, wake <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.chunks {
		if c.seq >= from {
			cs = append(cs, c)
		}
	}
	next = from
	if len(cs) > 0 {
		next = cs[len(cs)-1].seq + 1
		p.sent = max(p.sent, next)
	}
	over = p.done && len(cs) == 0
	return cs, next, over, p.wake
}

// markSeen records that a stream delivered the end: nobody needs the
// process any more.
func (p *process) markSeen() {
	p.mu.Lock()
	p.seen = true
	p.mu.Unlock()
}

// follow streams p's output from seq from on, then its end, until the
// command ends, ctx is done or the client goes. The command runs on
// either way.
func follow(ctx context.Context, st *stream, p *process, from uint64) {
	for {
		cs, next, over, wake := p.take(from)
		from = next
		for _, c := range cs {
			d := &dataEvent{}
			switch c.kind {
			case outStdout:
				d.Stdout = c.data
			case outStderr:
				d.Stderr = c.data
			default:
				d.Pty = c.data
			}
			if st.send(map[string]any{"event": processEvent{Data: d}}) != nil {
				return
			}
		}
		if over {
			p.mu.Lock()
			end, e := p.end, p.endErr
			p.mu.Unlock()
			if e != nil {
				st.end(e)
			} else if st.send(map[string]any{"event": processEvent{End: end}}) == nil {
				st.end(nil)
			}
			p.markSeen()
			return
		}
		if len(cs) > 0 {
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				st.end(cerr(codeDeadlineExceeded, "stream ran out of time (Connect-Timeout-Ms); the command goes on"))
			}
			return
		}
	}
}

// logWriter feeds a process's log.
type logWriter struct {
	p    *process
	kind int
}

func (w logWriter) Write(b []byte) (int, error) {
	w.p.add(w.kind, b)
	return len(b), nil
}
