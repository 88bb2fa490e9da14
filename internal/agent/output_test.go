package agent

import (
	"bytes"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
)

func TestOutputLogJoinsAndResumes(t *testing.T) {
	l := newOutputLog(1 << 20)
	l.write(channel.FrameStdout, []byte("a"))
	l.write(channel.FrameStdout, []byte("b"))
	l.write(channel.FrameStderr, []byte("E"))
	l.write(channel.FrameStdout, []byte("c"))
	stop := make(chan struct{})

	c, done, _ := l.nextFrom(1, stop)
	if done || c.stream != channel.FrameStdout || string(c.data) != "ab" || c.seq != 2 {
		t.Fatalf("first: %+v done=%v, want stdout ab up to seq 2", c, done)
	}
	c, _, _ = l.nextFrom(c.seq+1, stop)
	if c.stream != channel.FrameStderr || string(c.data) != "E" || c.seq != 3 {
		t.Fatalf("second: %+v", c)
	}
	// A reconnect resumes from what the host stored, even mid-join.
	c, _, _ = l.nextFrom(2, stop)
	if string(c.data) != "b" || c.seq != 2 {
		t.Fatalf("resume from 2: %+v", c)
	}
	l.ack(3)
	c, _, _ = l.nextFrom(1, stop)
	if string(c.data) != "c" || c.seq != 4 {
		t.Fatalf("after ack 3: %+v", c)
	}
	l.exit(9)
	if _, done, _ := l.nextFrom(5, stop); !done {
		t.Fatal("not done after exit with nothing left")
	}
}

func TestOutputLogBoundsJoinAndWaitsForAcks(t *testing.T) {
	l := newOutputLog(maxBatch * 2)
	big := bytes.Repeat([]byte("x"), maxBatch/2+1)
	l.write(channel.FrameStdout, big)
	l.write(channel.FrameStdout, big)
	c, _, _ := l.nextFrom(1, nil)
	if len(c.data) != len(big) || c.seq != 1 {
		t.Fatalf("joined past maxBatch: %d bytes, seq %d", len(c.data), c.seq)
	}
	// The log is full: a third write waits until the host acks.
	wrote := make(chan struct{})
	go func() { l.write(channel.FrameStdout, big); l.write(channel.FrameStdout, big); close(wrote) }()
	select {
	case <-wrote:
		t.Fatal("write past the limit did not wait")
	case <-time.After(100 * time.Millisecond):
	}
	l.ack(2)
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("write still waiting after an ack")
	}
}
