package sandboxapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/engine"
)

// process is a command started through process.Process/Start. Its PID is
// the server's, not the guest's: the SDK only hands it back to us.
type process struct {
	pid   uint32
	tag   string
	cfg   processConfig
	x     *engine.Exec
	stdin *io.PipeWriter // nil without stdin
}

// processConfig is envd's ProcessConfig.
type processConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  *string           `json:"cwd,omitempty"`
}

// processSelector is envd's ProcessSelector: a PID or a tag.
type processSelector struct {
	PID *uint32 `json:"pid,omitempty"`
	Tag *string `json:"tag,omitempty"`
}

// processEvent is envd's ProcessEvent, one of its fields set.
type processEvent struct {
	Start     *startEvent `json:"start,omitempty"`
	Data      *dataEvent  `json:"data,omitempty"`
	End       *endEvent   `json:"end,omitempty"`
	Keepalive *struct{}   `json:"keepalive,omitempty"`
}

type startEvent struct {
	PID uint32 `json:"pid"`
}

type dataEvent struct {
	Stdout []byte `json:"stdout,omitempty"` // base64 in JSON, as protobuf bytes
	Stderr []byte `json:"stderr,omitempty"`
}

type endEvent struct {
	ExitCode int32  `json:"exitCode"`
	Exited   bool   `json:"exited"`
	Status   string `json:"status"`
	Error    string `json:"error,omitempty"`
}

// keepaliveEvery bounds the time between messages of a quiet command, so
// proxies and the SDK's idle timers do not cut it.
const keepaliveEvery = 30 * time.Second

// processStart is process.Process/Start: run a command in the sandbox's
// container and stream start, output and end.
func (s *Server) processStart(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process processConfig `json:"process"`
		Tag     *string       `json:"tag,omitempty"`
		Stdin   *bool         `json:"stdin,omitempty"`
		PTY     *struct{}     `json:"pty,omitempty"`
	}
	if e := readStreamRequest(r, &req); e != nil {
		writeUnaryError(w, e)
		return
	}
	if req.Process.Cmd == "" {
		writeUnaryError(w, cerr(codeInvalidArgument, "process.cmd: required"))
		return
	}
	if req.PTY != nil {
		writeUnaryError(w, cerr(codeUnimplemented, "pty: not supported by fcvm serve yet"))
		return
	}
	ctx := r.Context()
	if v := r.Header.Get("Connect-Timeout-Ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			writeUnaryError(w, cerr(codeInvalidArgument, "Connect-Timeout-Ms %q: not a positive number", v))
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	xreq := channel.ExecRequest{
		Cmd: append([]string{req.Process.Cmd}, req.Process.Args...),
		Env: envList(sb.EnvVars, req.Process.Envs),
	}
	if req.Process.Cwd != nil {
		xreq.Workdir = *req.Process.Cwd
	}
	xreq.User = basicUser(r)
	withStdin := req.Stdin != nil && *req.Stdin
	xreq.Stdin = withStdin
	x, err := s.cfg.Engine.Exec(ctx, sb.VMID, xreq)
	if err != nil {
		writeUnaryError(w, cerr(codeUnavailable, "%v", err))
		return
	}
	defer x.Close()
	p := &process{cfg: req.Process, x: x}
	if req.Tag != nil {
		p.tag = *req.Tag
	}
	if withStdin {
		pr, pw := io.Pipe()
		p.stdin = pw
		x.Stdin(pr)
		defer pw.Close()
	}
	if !s.addProcess(sb.ID, p) {
		writeUnaryError(w, cerr(codeResourceExhausted, "sandbox %s runs %d commands through the API, the most it may", sb.ID, maxProcesses))
		return
	}
	defer s.removeProcess(sb.ID, p.pid)

	st := newStream(w)
	if err := st.send(map[string]any{"event": processEvent{Start: &startEvent{PID: p.pid}}}); err != nil {
		return
	}
	// A command outlives neither its deadline nor its caller.
	stop := context.AfterFunc(ctx, func() { x.Close() })
	defer stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(keepaliveEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				st.send(map[string]any{"event": processEvent{Keepalive: &struct{}{}}})
			}
		}
	}()
	code, err := x.Wait(eventWriter{st, false}, eventWriter{st, true})
	if err != nil {
		switch ctx.Err() {
		case context.DeadlineExceeded:
			st.end(cerr(codeDeadlineExceeded, "command ran out of time (Connect-Timeout-Ms) and was killed"))
		case nil:
			st.end(cerr(codeUnavailable, "%v", err))
		}
		return
	}
	end := &endEvent{ExitCode: int32(code), Exited: true, Status: fmt.Sprintf("exit status %d", code)}
	if code > 128 && code < 128+65 {
		// The agent reports death by signal as 128+N, as a shell does.
		end.Exited = false
		end.Status = "signal: " + syscall.Signal(code-128).String()
	}
	if err := st.send(map[string]any{"event": processEvent{End: end}}); err != nil {
		return
	}
	st.end(nil)
}

// eventWriter turns output into data events.
type eventWriter struct {
	st     *stream
	stderr bool
}

func (ew eventWriter) Write(b []byte) (int, error) {
	d := &dataEvent{}
	if ew.stderr {
		d.Stderr = b
	} else {
		d.Stdout = b
	}
	if err := ew.st.send(map[string]any{"event": processEvent{Data: d}}); err != nil {
		return 0, err
	}
	return len(b), nil
}

// envList merges the sandbox's env vars and the command's, the command's
// winning, into K=V form in a stable order.
func envList(sandbox, cmd map[string]string) []string {
	m := map[string]string{}
	for k, v := range sandbox {
		m[k] = v
	}
	for k, v := range cmd {
		m[k] = v
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// maxProcesses bounds the commands one sandbox runs through the API at
// once: each holds a connection to the VM and a goroutine here.
const maxProcesses = 256

// addProcess gives p a PID and enters it in the table, unless the
// sandbox has maxProcesses already.
func (s *Server) addProcess(sandboxID string, p *process) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.procs[sandboxID]) >= maxProcesses {
		return false
	}
	s.nextPID++
	p.pid = s.nextPID
	if s.procs[sandboxID] == nil {
		s.procs[sandboxID] = map[uint32]*process{}
	}
	s.procs[sandboxID][p.pid] = p
	return true
}

func (s *Server) removeProcess(sandboxID string, pid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.procs[sandboxID], pid)
}

// findProcess returns the process sel names in the sandbox, or nil.
func (s *Server) findProcess(sandboxID string, sel processSelector) *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs[sandboxID] {
		if sel.PID != nil && p.pid == *sel.PID || sel.Tag != nil && p.tag == *sel.Tag {
			return p
		}
	}
	return nil
}

// signal is envd's Signal enum, which protobuf JSON gives by name or
// number.
type signal syscall.Signal

func (sig *signal) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err != nil {
		name = string(b)
	}
	switch name {
	case "SIGNAL_SIGTERM", "15":
		*sig = signal(syscall.SIGTERM)
	case "SIGNAL_SIGKILL", "9":
		*sig = signal(syscall.SIGKILL)
	default:
		return fmt.Errorf("signal %s: want SIGNAL_SIGTERM or SIGNAL_SIGKILL", b)
	}
	return nil
}

// unaryProcess decodes a unary call into req and returns the process
// *sel (a field of req) names, or answers with the error and returns nil.
func (s *Server) unaryProcess(w http.ResponseWriter, r *http.Request, sb *sandbox, req any, sel *processSelector) *process {
	if e := readUnaryRequest(w, r, req); e != nil {
		writeUnaryError(w, e)
		return nil
	}
	p := s.findProcess(sb.ID, *sel)
	if p == nil {
		writeUnaryError(w, cerr(codeNotFound, "process not found"))
	}
	return p
}

// processSendSignal is process.Process/SendSignal.
func (s *Server) processSendSignal(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process processSelector `json:"process"`
		Signal  signal          `json:"signal"`
	}
	p := s.unaryProcess(w, r, sb, &req, &req.Process)
	if p == nil {
		return
	}
	if req.Signal == 0 {
		writeUnaryError(w, cerr(codeInvalidArgument, "signal: required"))
		return
	}
	if err := p.x.Signal(syscall.Signal(req.Signal)); err != nil {
		writeUnaryError(w, cerr(codeInternal, "signal process %d: %v", p.pid, err))
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// stdinWait bounds how long SendInput waits for a command to take its
// input.
const stdinWait = 30 * time.Second

// processSendInput is process.Process/SendInput: bytes for the stdin of
// a command started with stdin.
func (s *Server) processSendInput(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process processSelector `json:"process"`
		Input   struct {
			Stdin []byte `json:"stdin"`
		} `json:"input"`
	}
	p := s.unaryProcess(w, r, sb, &req, &req.Process)
	if p == nil {
		return
	}
	if p.stdin == nil {
		writeUnaryError(w, cerr(codeFailedPrecond, "process %d was started without stdin", p.pid))
		return
	}
	// A command that does not read its input must not hold this call:
	// the write waits for the guest at most stdinWait, and is undone by
	// the command's end, which closes the pipe.
	done := make(chan error, 1)
	go func() {
		_, err := p.stdin.Write(req.Input.Stdin)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			writeUnaryError(w, cerr(codeFailedPrecond, "write stdin of process %d: %v", p.pid, err))
			return
		}
	case <-time.After(stdinWait):
		writeUnaryError(w, cerr(codeDeadlineExceeded, "process %d did not read its stdin within %v", p.pid, stdinWait))
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// processCloseStdin is process.Process/CloseStdin.
func (s *Server) processCloseStdin(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process processSelector `json:"process"`
	}
	p := s.unaryProcess(w, r, sb, &req, &req.Process)
	if p == nil {
		return
	}
	if p.stdin != nil {
		p.stdin.Close()
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// processList is process.Process/List.
func (s *Server) processList(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct{}
	if e := readUnaryRequest(w, r, &req); e != nil {
		writeUnaryError(w, e)
		return
	}
	type info struct {
		Config processConfig `json:"config"`
		PID    uint32        `json:"pid"`
		Tag    string        `json:"tag,omitempty"`
	}
	s.mu.Lock()
	out := []info{}
	for _, p := range s.procs[sb.ID] {
		out = append(out, info{Config: p.cfg, PID: p.pid, Tag: p.tag})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b info) int { return int(a.PID) - int(b.PID) })
	writeJSON(w, http.StatusOK, map[string]any{"processes": out})
}
