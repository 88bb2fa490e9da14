package sandboxapi

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"
	"time"
)

// TestProcessLogKeepsWhatNobodyTook: output with no stream waits for the
// next one, the newest maxBacklog bytes of it, and a stream that comes
// later gets only what earlier ones did not.
func TestProcessLogKeepsWhatNobodyTook(t *testing.T) {
	p := newProcess(processConfig{Cmd: "x"}, "", false, nil)
	p.add(outStdout, []byte("one "))
	p.add(outStderr, []byte("two "))
	cs, next, over, _ := p.take(p.cursor())
	if len(cs) != 2 || next != 2 || over || string(cs[0].data)+string(cs[1].data) != "one two " {
		t.Fatalf("take: %v next %d over %v", cs, next, over)
	}
	if p.cursor() != 2 {
		t.Errorf("cursor %d after a stream took 2 chunks, want 2", p.cursor())
	}
	// Too much output while nobody listens: the oldest goes.
	big := bytes.Repeat([]byte("a"), maxBacklog/2)
	for range 3 {
		p.add(outStdout, big)
	}
	p.add(outStdout, []byte("last"))
	cs, _, _, _ = p.take(p.cursor())
	held := 0
	for _, c := range cs {
		held += len(c.data)
	}
	if held > maxBacklog || string(cs[len(cs)-1].data) != "last" || cs[0].seq == 2 {
		t.Errorf("backlog: %d bytes in %d chunks from seq %d, want at most %d ending in the newest", held, len(cs), cs[0].seq, maxBacklog)
	}
	// One chunk over the limit keeps its tail.
	p.add(outStdout, append(bytes.Repeat([]byte("b"), maxBacklog), "tail"...))
	cs, _, _, _ = p.take(p.cursor())
	if len(cs) != 1 || len(cs[0].data) != maxBacklog || !bytes.HasSuffix(cs[0].data, []byte("tail")) {
		t.Errorf("huge chunk: %d chunks, first %d bytes", len(cs), len(cs[0].data))
	}
	p.finish(&endEvent{ExitCode: 3, Exited: true, Status: "exit status 3"}, nil)
	if _, _, over, _ := p.take(p.cursor()); !over {
		t.Error("ended and drained, but take says not over")
	}
}

// TestFollowStreamsOutputThenEnd: a stream sends start's successors in
// order, waits for output, and ends with the end event.
func TestFollowStreamsOutputThenEnd(t *testing.T) {
	p := newProcess(processConfig{Cmd: "x"}, "", true, nil)
	p.add(outPTY, []byte("$ "))
	w := httptest.NewRecorder()
	st := newStream(w)
	done := make(chan struct{})
	go func() {
		defer close(done)
		follow(context.Background(), st, p, 0)
	}()
	time.Sleep(10 * time.Millisecond)
	p.add(outPTY, []byte("hi\r\n"))
	p.finish(&endEvent{ExitCode: 0, Exited: true, Status: "exit status 0"}, nil)
	<-done
	var msgs []string
	body := w.Body.Bytes()
	for len(body) >= 5 {
		_, msg, err := readEnvelope(bytes.NewReader(body), MaxJSONBody)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, string(msg))
		body = body[5+len(msg):]
	}
	want := []string{
		`{"event":{"data":{"pty":"JCA="}}}`,
		`{"event":{"data":{"pty":"aGkNCg=="}}}`,
		`{"event":{"end":{"exitCode":0,"exited":true,"status":"exit status 0"}}}`,
		`{}`,
	}
	if len(msgs) != len(want) {
		t.Fatalf("messages %q, want %q", msgs, want)
	}
	for i := range want {
		if msgs[i] != want[i] {
			t.Errorf("message %d: %s, want %s", i, msgs[i], want[i])
		}
	}
	if !p.seen {
		t.Error("the end was sent but the process is not marked seen")
	}
}

// TestProcessTable: a tag names one running command; the table of a
// sandbox is bounded.
func TestProcessTable(t *testing.T) {
	s := newTestServer(t)
	p1 := newProcess(processConfig{Cmd: "a"}, "job", false, nil)
	if e := s.addProcess("sb", p1); e != nil {
		t.Fatal(e)
	}
	if e := s.addProcess("sb", newProcess(processConfig{Cmd: "b"}, "job", false, nil)); e == nil || e.Code != codeAlreadyExists {
		t.Errorf("second command tagged job: %v, want already_exists", e)
	}
	tag := "job"
	if got := s.findProcess("sb", processSelector{Tag: &tag}, false); got != p1 {
		t.Errorf("find by tag: %v", got)
	}
	p1.finish(&endEvent{Exited: true}, nil)
	if got := s.findProcess("sb", processSelector{Tag: &tag}, false); got != nil {
		t.Errorf("an ended command is found for signals: %v", got)
	}
	if got := s.findProcess("sb", processSelector{PID: &p1.pid}, true); got != p1 {
		t.Errorf("an ended command is not found for Connect: %v", got)
	}
	if e := s.addProcess("sb", newProcess(processConfig{Cmd: "c"}, "job", false, nil)); e != nil {
		t.Errorf("tag of an ended command reused: %v", e)
	}
	for i := 2; i < maxProcesses; i++ {
		if e := s.addProcess("sb", newProcess(processConfig{Cmd: "d"}, "", false, nil)); e != nil {
			t.Fatalf("command %d: %v", i, e)
		}
	}
	if e := s.addProcess("sb", newProcess(processConfig{Cmd: "e"}, "", false, nil)); e == nil || e.Code != codeResourceExhausted {
		t.Errorf("command %d: %v, want resource_exhausted", maxProcesses+1, e)
	}
	s.removeProcess("sb", p1)
	if e := s.addProcess("sb", newProcess(processConfig{Cmd: "f"}, "", false, nil)); e != nil {
		t.Errorf("after one left: %v", e)
	}
}
