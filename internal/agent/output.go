package agent

import (
	"sync"

	"github.com/fcvm/fcvm/internal/channel"
)

// outputLog holds the container's output until the host has stored it.
type outputLog struct {
	limit int

	mu   sync.Mutex // guards the fields below
	cond *sync.Cond
	// chunks are unacknowledged output, in order; chunks[0].seq is the
	// oldest still held.
	chunks []chunk
	next   uint64 // seq of the next chunk appended (starts at 1)
	held   int    // bytes in chunks
	exited bool
	code   int
	closed bool
}

type chunk struct {
	seq    uint64
	stream channel.FrameType
	data   []byte
}

func newOutputLog(limit int) *outputLog {
	l := &outputLog{limit: limit, next: 1}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// write appends output, waiting while the host is too far behind.
func (l *outputLog) write(stream channel.FrameType, p []byte) {
	if len(p) == 0 {
		return
	}
	data := append([]byte(nil), p...)
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.held > 0 && l.held+len(data) > l.limit && !l.closed {
		l.cond.Wait()
	}
	l.chunks = append(l.chunks, chunk{seq: l.next, stream: stream, data: data})
	l.next++
	l.held += len(data)
	l.cond.Broadcast()
}

// exit records the container's exit code; readers see it after the last
// chunk.
func (l *outputLog) exit(code int) {
	l.mu.Lock()
	l.exited, l.code = true, code
	l.cond.Broadcast()
	l.mu.Unlock()
}

func (l *outputLog) status() (exited bool, code int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exited, l.code
}

// ack drops chunks up to and including seq.
func (l *outputLog) ack(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for i < len(l.chunks) && l.chunks[i].seq <= seq {
		l.held -= len(l.chunks[i].data)
		i++
	}
	l.chunks = l.chunks[i:]
	l.cond.Broadcast()
}

// maxBatch bounds how much output nextFrom joins into one chunk.
const maxBatch = 256 << 10

// nextFrom returns the output from seq from on, waiting for some: the
// first chunk at or after from joined with the chunks of the same stream
// that follow it (up to maxBatch), carrying the last one's seq. Fewer,
// larger frames matter under TCG, where every message costs the guest a
// wakeup. done is true (and c empty) once the container has exited and
// nothing at or after from remains. stop ends the wait early.
func (l *outputLog) nextFrom(from uint64, stop <-chan struct{}) (c chunk, done, stopped bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		for i, ch := range l.chunks {
			if ch.seq < from {
				continue
			}
			j := i + 1
			n := len(ch.data)
			for j < len(l.chunks) && l.chunks[j].stream == ch.stream && n+len(l.chunks[j].data) <= maxBatch {
				n += len(l.chunks[j].data)
				j++
			}
			if j == i+1 {
				return ch, false, false
			}
			data := make([]byte, 0, n)
			for _, c := range l.chunks[i:j] {
				data = append(data, c.data...)
			}
			return chunk{seq: l.chunks[j-1].seq, stream: ch.stream, data: data}, false, false
		}
		if l.exited {
			return chunk{}, true, false
		}
		select {
		case <-stop:
			return chunk{}, false, true
		default:
		}
		l.cond.Wait()
	}
}

// wake makes waiters in nextFrom re-check their stop channels.
func (l *outputLog) wake() {
	l.mu.Lock()
	l.cond.Broadcast()
	l.mu.Unlock()
}
