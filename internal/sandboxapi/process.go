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
)

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
	Pty    []byte `json:"pty,omitempty"`
}

type endEvent struct {
	ExitCode int32  `json:"exitCode"`
	Exited   bool   `json:"exited"`
	Status   string `json:"status"`
	Error    string `json:"error,omitempty"`
}

// ptyConfig is envd's PTY.
type ptyConfig struct {
	Size struct {
		Cols uint32 `json:"cols"`
		Rows uint32 `json:"rows"`
	} `json:"size"`
}

// winsize checks a terminal size from a caller.
func (c *ptyConfig) winsize() (rows, cols uint16, e *connectError) {
	if c.Size.Rows == 0 || c.Size.Cols == 0 || c.Size.Rows > 1000 || c.Size.Cols > 1000 {
		return 0, 0, cerr(codeInvalidArgument, "pty.size %dx%d: rows and cols must be between 1 and 1000", c.Size.Rows, c.Size.Cols)
	}
	return uint16(c.Size.Rows), uint16(c.Size.Cols), nil
}

// keepaliveEvery bounds the time between messages of a quiet stream, so
// proxies and the SDK's idle timers do not cut it.
const keepaliveEvery = 30 * time.Second

// keepalive sends msg on st every keepaliveEvery until the returned stop
// is called. Stop also closes st, waiting for a send under way: nothing
// is written to the response once the handler has returned.
func keepalive(st *stream, msg any) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(keepaliveEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				st.send(msg)
			}
		}
	}()
	return func() {
		close(done)
		st.close()
	}
}

// deadline reads Connect-Timeout-Ms: 0 when absent.
func deadline(r *http.Request) (time.Duration, *connectError) {
	v := r.Header.Get("Connect-Timeout-Ms")
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 || ms > int64(MaxTimeout/time.Millisecond) {
		return 0, cerr(codeInvalidArgument, "Connect-Timeout-Ms %q: not a positive number of milliseconds up to %d", v, MaxTimeout.Milliseconds())
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// beginStream opens a server-stream call that follows something already
// there (a command, a directory): it decodes the request into req,
// counts the stream against the sandbox's, and returns the request's
// context ended by its Connect-Timeout-Ms, if any, and what ends it all.
// On failure it has answered the call, and ok is false.
func (s *Server) beginStream(w http.ResponseWriter, r *http.Request, sb *sandbox, req any) (ctx context.Context, end func(), ok bool) {
	if e := readStreamRequest(r, req); e != nil {
		writeStreamError(w, e)
		return nil, nil, false
	}
	life, e := deadline(r)
	if e == nil {
		e = s.openStream(sb.ID)
	}
	if e != nil {
		writeStreamError(w, e)
		return nil, nil, false
	}
	ctx, cancel := context.WithCancel(r.Context())
	if life > 0 {
		ctx, cancel = context.WithTimeout(r.Context(), life)
	}
	return ctx, func() { cancel(); s.closeStream(sb.ID) }, true
}

// processStart is process.Process/Start: start a command in the
// sandbox's container, then stream start, output and end. The command
// belongs to the server (proclog.go): a client that goes away leaves it
// running, to be found again with Connect; its Connect-Timeout-Ms is its
// life.
func (s *Server) processStart(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process processConfig `json:"process"`
		Tag     *string       `json:"tag,omitempty"`
		Stdin   *bool         `json:"stdin,omitempty"`
		PTY     *ptyConfig    `json:"pty,omitempty"`
	}
	if e := readStreamRequest(r, &req); e != nil {
		writeStreamError(w, e)
		return
	}
	if req.Process.Cmd == "" {
		writeStreamError(w, cerr(codeInvalidArgument, "process.cmd: required"))
		return
	}
	life, e := deadline(r)
	if e != nil {
		writeStreamError(w, e)
		return
	}
	xreq := channel.ExecRequest{
		Cmd:   append([]string{req.Process.Cmd}, req.Process.Args...),
		Env:   envList(sb.EnvVars, req.Process.Envs),
		User:  basicUser(r),
		Stdin: req.Stdin != nil && *req.Stdin,
	}
	if req.Process.Cwd != nil {
		xreq.Workdir = *req.Process.Cwd
	}
	if req.PTY != nil {
		rows, cols, e := req.PTY.winsize()
		if e != nil {
			writeStreamError(w, e)
			return
		}
		xreq.TTY, xreq.Rows, xreq.Cols, xreq.Stdin = true, rows, cols, true
	}
	if e := s.openStream(sb.ID); e != nil {
		writeStreamError(w, e)
		return
	}
	defer s.closeStream(sb.ID)
	tag := ""
	if req.Tag != nil {
		tag = *req.Tag
		if q := s.findProcess(sb.ID, processSelector{Tag: &tag}, false); q != nil {
			writeStreamError(w, cerr(codeAlreadyExists, "a command tagged %q runs already (pid %d)", tag, q.pid))
			return
		}
	}
	// The command outlives this request: it is started in a context of
	// its own, bounded by its deadline.
	x, err := s.cfg.Engine.Exec(r.Context(), sb.VMID, xreq)
	if err != nil {
		writeStreamError(w, cerr(codeUnavailable, "%v", err))
		return
	}
	p := newProcess(req.Process, tag, xreq.TTY, x)
	if xreq.Stdin {
		pr, pw := io.Pipe()
		p.stdin = pw
		x.Stdin(pr)
	}
	if e := s.addProcess(sb.ID, p); e != nil {
		x.Close()
		writeStreamError(w, e)
		return
	}
	go s.runProcess(sb.ID, p, life)

	st := newStream(w)
	if st.send(map[string]any{"event": processEvent{Start: &startEvent{PID: p.pid}}}) != nil {
		return
	}
	defer keepalive(st, map[string]any{"event": processEvent{Keepalive: &struct{}{}}})()
	follow(r.Context(), st, p, 0)
}

// runProcess reads p's output into its log until the command ends (or
// runs past life, if not 0), then keeps it for endedKept unless a stream
// has seen its end.
func (s *Server) runProcess(sandboxID string, p *process, life time.Duration) {
	ctx := context.Background()
	if life > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, life)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, func() { p.x.Close() })
	out, errw := logWriter{p, outStdout}, logWriter{p, outStderr}
	if p.pty {
		out = logWriter{p, outPTY}
	}
	code, err := p.x.Wait(out, errw)
	stop()
	p.x.Close()
	if p.stdin != nil {
		p.stdin.Close()
	}
	switch {
	case err != nil && ctx.Err() == context.DeadlineExceeded:
		p.finish(nil, cerr(codeDeadlineExceeded, "command ran out of time (Connect-Timeout-Ms) and was killed"))
	case err != nil:
		p.finish(nil, cerr(codeUnavailable, "%v", err))
	default:
		end := &endEvent{ExitCode: int32(code), Exited: true, Status: fmt.Sprintf("exit status %d", code)}
		if code > 128 && code < 128+65 {
			// The agent reports death by signal as 128+N, as a shell does.
			end.Exited = false
			end.Status = "signal: " + syscall.Signal(code-128).String()
		}
		p.finish(end, nil)
	}
	// Give a stream that follows a moment to deliver the end before
	// deciding whether anyone saw it.
	time.Sleep(100 * time.Millisecond)
	p.mu.Lock()
	seen := p.seen
	p.mu.Unlock()
	if !seen {
		time.Sleep(endedKept)
	}
	s.removeProcess(sandboxID, p)
}

// processConnect is process.Process/Connect: stream a running command's
// output (what no stream has been sent yet, then what comes) and its end.
func (s *Server) processConnect(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process processSelector `json:"process"`
	}
	ctx, end, ok := s.beginStream(w, r, sb, &req)
	if !ok {
		return
	}
	defer end()
	p := s.findProcess(sb.ID, req.Process, true)
	if p == nil {
		writeStreamError(w, cerr(codeNotFound, "process not found"))
		return
	}
	st := newStream(w)
	if st.send(map[string]any{"event": processEvent{Start: &startEvent{PID: p.pid}}}) != nil {
		return
	}
	defer keepalive(st, map[string]any{"event": processEvent{Keepalive: &struct{}{}}})()
	follow(ctx, st, p, p.cursor())
}

// processUpdate is process.Process/Update: resize a command's terminal.
func (s *Server) processUpdate(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Process processSelector `json:"process"`
		PTY     *ptyConfig      `json:"pty,omitempty"`
	}
	p := s.unaryProcess(w, r, sb, &req, &req.Process)
	if p == nil {
		return
	}
	if req.PTY != nil {
		if !p.pty {
			writeUnaryError(w, cerr(codeFailedPrecond, "process %d has no terminal to resize", p.pid))
			return
		}
		rows, cols, e := req.PTY.winsize()
		if e != nil {
			writeUnaryError(w, e)
			return
		}
		if err := p.x.Resize(rows, cols); err != nil {
			writeUnaryError(w, cerr(codeNotFound, "resize process %d: %v", p.pid, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// addProcess gives p a PID and enters it in the table, unless the
// sandbox has maxProcesses already or a running command has p's tag.
func (s *Server) addProcess(sandboxID string, p *process) *connectError {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.procs[sandboxID]) >= maxProcesses {
		return cerr(codeResourceExhausted, "sandbox %s has %d commands, the most it may: kill one or wait for it to end", sandboxID, maxProcesses)
	}
	for _, q := range s.procs[sandboxID] {
		if p.tag != "" && q.tag == p.tag && !q.ended() {
			return cerr(codeAlreadyExists, "a command tagged %q runs already (pid %d)", p.tag, q.pid)
		}
	}
	s.nextPID++
	p.pid = s.nextPID
	if s.procs[sandboxID] == nil {
		s.procs[sandboxID] = map[uint32]*process{}
	}
	s.procs[sandboxID][p.pid] = p
	return nil
}

func (s *Server) removeProcess(sandboxID string, p *process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.procs[sandboxID][p.pid] == p {
		delete(s.procs[sandboxID], p.pid)
	}
	if len(s.procs[sandboxID]) == 0 {
		delete(s.procs, sandboxID)
	}
}

// findProcess returns the process sel names in the sandbox, or nil. An
// ended one counts only if withEnded.
func (s *Server) findProcess(sandboxID string, sel processSelector, withEnded bool) *process {
	s.mu.Lock()
	var found *process
	for _, p := range s.procs[sandboxID] {
		if sel.PID != nil && p.pid == *sel.PID || sel.Tag != nil && p.tag == *sel.Tag {
			found = p
			break
		}
	}
	s.mu.Unlock()
	if found == nil || !withEnded && found.ended() {
		return nil
	}
	return found
}

// openStream counts a stream of the sandbox against maxStreams, or says
// why it cannot be opened.
func (s *Server) openStream(sandboxID string) *connectError {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[sandboxID] >= maxStreams {
		return cerr(codeResourceExhausted, "sandbox %s has %d streams and watches open, the most it may: close one", sandboxID, maxStreams)
	}
	s.streams[sandboxID]++
	return nil
}

func (s *Server) closeStream(sandboxID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[sandboxID]--; s.streams[sandboxID] <= 0 {
		delete(s.streams, sandboxID)
	}
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
	p := s.findProcess(sb.ID, *sel, false)
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
			Pty   []byte `json:"pty"`
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
	// One write per command at a time: a caller cannot pile up
	// writes the command does not take.
	select {
	case p.writing <- struct{}{}:
	case <-time.After(stdinWait):
		writeUnaryError(w, cerr(codeDeadlineExceeded, "process %d did not read its stdin within %v", p.pid, stdinWait))
		return
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-p.writing }()
		_, err := p.stdin.Write(append(req.Input.Stdin, req.Input.Pty...))
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
	procs := make([]*process, 0, len(s.procs[sb.ID]))
	for _, p := range s.procs[sb.ID] {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	out := []info{}
	for _, p := range procs {
		if !p.ended() {
			out = append(out, info{Config: p.cfg, PID: p.pid, Tag: p.tag})
		}
	}
	slices.SortFunc(out, func(a, b info) int { return int(a.PID) - int(b.PID) })
	writeJSON(w, http.StatusOK, map[string]any{"processes": out})
}
