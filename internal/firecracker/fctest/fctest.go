// Package fctest lets tests outside internal/firecracker run the driver's
// real process and API code on a host without /dev/kvm or a firecracker
// binary: the test binary, re-executed, stands in for firecracker and
// serves a fake of its API on --api-sock.
//
// The fake validates every request against the embedded spec (closed:
// unknown fields are refused, as Firecracker's deny_unknown_fields does),
// records it, and keeps just enough state to refuse what Firecracker
// refuses out of order: pre-boot calls after start, snapshot/create while
// running, snapshot/load on a configured process. It never runs a VM.
// PUT /snapshot/create writes placeholder files at the paths it is given,
// so callers that copy or digest them have something to work on.
//
// # Use
//
//	func TestMain(m *testing.M) {
//		fctest.Main()          // serves and exits when re-executed as the stand-in
//		os.Exit(m.Run())
//	}
//
//	rec := fctest.Env(t)     // children started by this test are stand-ins recording to rec
//	d := firecracker.New(firecracker.Options{Binary: fctest.Binary()})
//	calls := fctest.Calls(t, rec)
//
// Env uses t.Setenv, so tests that call it cannot run in parallel.
package fctest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/firecracker"
	"github.com/fcvm/fcvm/internal/firecracker/fcspec"
)

// Environment variables that make the re-executed test binary a stand-in.
const (
	// ModeEnv set to "api" makes the process serve the fake API.
	ModeEnv = "FCVM_FCTEST_STANDIN"
	// RecordEnv names a file that receives one JSON Call per request.
	RecordEnv = "FCVM_FCTEST_RECORD"
	// WatchEnv is a file glob: each recorded Call lists the files that
	// match it when the request arrived (Call.Files), so a test can tell
	// what its code did between two API calls.
	WatchEnv = "FCVM_FCTEST_WATCH"
	// Version is what the stand-in reports as its Firecracker version.
	Version = "1.17.0"
)

// Call is one request the fake received.
type Call struct {
	Op      string          `json:"op"` // "PUT /drives/base"
	Body    json.RawMessage `json:"body,omitempty"`
	Invalid string          `json:"invalid,omitempty"`
	// At is when it arrived.
	At time.Time `json:"at"`
	// Files match WatchEnv when the request arrived.
	Files []string `json:"files,omitempty"`
}

// Main serves the fake API and exits when the process was started as a
// stand-in; otherwise it returns at once. Call it first in TestMain.
func Main() {
	if os.Getenv(ModeEnv) == "" {
		return
	}
	os.Exit(serve(os.Args[1:]))
}

// Binary is the stand-in executable: the running test binary.
func Binary() string { return os.Args[0] }

// Env makes processes this test starts stand-ins that record their calls
// into the returned file.
func Env(t *testing.T) string {
	t.Helper()
	rec := filepath.Join(t.TempDir(), "calls.jsonl")
	t.Setenv(ModeEnv, "api")
	t.Setenv(RecordEnv, rec)
	return rec
}

// Calls reads what the stand-ins recorded in record.
func Calls(t *testing.T, record string) []Call {
	t.Helper()
	f, err := os.Open(record)
	if err != nil {
		t.Fatalf("read stand-in record: %v", err)
	}
	defer f.Close()
	var calls []Call
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("stand-in record line %q: %v", sc.Text(), err)
		}
		calls = append(calls, c)
	}
	return calls
}

// Ops lists the calls' "METHOD /path".
func Ops(calls []Call) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Op)
	}
	return out
}

// AssertValid fails the test for every call the spec refused.
func AssertValid(t *testing.T, calls []Call) {
	t.Helper()
	for _, c := range calls {
		if c.Invalid != "" {
			t.Errorf("%s: spec rejects request: %s\nbody: %s", c.Op, c.Invalid, c.Body)
		}
	}
}

// Body decodes the body of the first call op into out.
func Body(t *testing.T, calls []Call, op string, out any) {
	t.Helper()
	for _, c := range calls {
		if c.Op == op {
			if err := json.Unmarshal(c.Body, out); err != nil {
				t.Fatalf("%s body: %v", op, err)
			}
			return
		}
	}
	t.Fatalf("no %s call in %v", op, Ops(calls))
}

func serve(args []string) int {
	for _, a := range args {
		if a == "--version" {
			fmt.Printf("Firecracker v%s\n\n", Version)
			return 0
		}
	}
	var sock string
	for i, a := range args {
		if a == "--api-sock" && i+1 < len(args) {
			sock = args[i+1]
		}
	}
	spec, err := fcspec.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	f := &fake{spec: spec, state: "Not started", configured: map[string]bool{}, record: os.Getenv(RecordEnv)}
	fmt.Println("stand-in serial console: no VM here")
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	http.Serve(l, f)
	return 0
}

type fake struct {
	spec   *fcspec.Spec
	record string

	// mu guards the fields below.
	mu         sync.Mutex
	state      string // "Not started", "Running", "Paused"
	configured map[string]bool
}

// preBoot are the resources Firecracker accepts only before InstanceStart.
var preBoot = map[string]bool{
	"PUT /machine-config": true, "PUT /boot-source": true, "PUT /drives": true,
	"PUT /network-interfaces": true, "PUT /vsock": true, "PUT /mmds/config": true,
	"PUT /entropy": true, "PUT /balloon": true,
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	c := Call{Op: r.Method + " " + r.URL.Path, At: time.Now()}
	if g := os.Getenv(WatchEnv); g != "" {
		c.Files, _ = filepath.Glob(g)
	}
	if len(body) > 0 {
		c.Body = json.RawMessage(body)
	}
	if err := f.spec.ValidateHTTP(r); err != nil {
		c.Invalid = err.Error()
	}
	f.mu.Lock()
	f.recordLocked(c)
	status, resp, exit := f.handleLocked(c, body)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(resp)
	if exit {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		go func() { time.Sleep(10 * time.Millisecond); os.Exit(0) }()
	}
}

func (f *fake) recordLocked(c Call) {
	if f.record == "" {
		return
	}
	out, err := os.OpenFile(f.record, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	json.NewEncoder(out).Encode(c)
	out.Close()
}

func fault(format string, a ...any) []byte {
	b, _ := json.Marshal(map[string]string{"fault_message": fmt.Sprintf(format, a...)})
	return b
}

func (f *fake) handleLocked(c Call, body []byte) (status int, resp []byte, exit bool) {
	if c.Invalid != "" {
		return 400, fault("%s", c.Invalid), false
	}
	method, path, _ := strings.Cut(c.Op, " ")
	resource := method + " /" + strings.Split(strings.TrimPrefix(path, "/"), "/")[0]
	if path == "/mmds/config" {
		resource = "PUT /mmds/config"
	}
	started := f.state != "Not started"
	if preBoot[resource] && started {
		return 400, fault("The requested operation is not supported after starting the microVM."), false
	}
	switch {
	case method == "GET" && path == "/version":
		b, _ := json.Marshal(firecracker.Version{FirecrackerVersion: Version})
		return 200, b, false
	case method == "GET" && path == "/":
		b, _ := json.Marshal(firecracker.InstanceInfo{AppName: "Firecracker", ID: "anonymous-instance", State: f.state, VMMVersion: Version})
		return 200, b, false
	case method == "PUT" && path == "/actions":
		var a struct {
			ActionType firecracker.ActionType `json:"action_type"`
		}
		json.Unmarshal(body, &a)
		switch a.ActionType {
		case firecracker.ActionInstanceStart:
			if started {
				return 400, fault("The microVM is already running."), false
			}
			f.state = "Running"
		case firecracker.ActionSendCtrlAltDel:
			if f.state != "Running" {
				return 400, fault("The microVM is not running."), false
			}
			return 204, nil, true
		}
	case method == "PATCH" && path == "/vm":
		var v struct {
			State firecracker.VMState `json:"state"`
		}
		json.Unmarshal(body, &v)
		if !started {
			return 400, fault("The microVM has not been started."), false
		}
		f.state = "Running"
		if v.State == firecracker.VMPaused {
			f.state = "Paused"
		}
	case method == "PUT" && path == "/snapshot/create":
		if f.state != "Paused" {
			return 400, fault("Cannot create snapshot: the microVM is not paused."), false
		}
		var sc firecracker.SnapshotCreate
		json.Unmarshal(body, &sc)
		for _, p := range []string{sc.SnapshotPath, sc.MemFilePath} {
			if err := os.WriteFile(p, []byte("stand-in: not a snapshot\n"), 0o600); err != nil {
				return 400, fault("Cannot create snapshot: %v", err), false
			}
		}
	case method == "PUT" && path == "/snapshot/load":
		for r := range f.configured {
			if r != "PUT /logger" && r != "PUT /metrics" {
				return 400, fault("Loading a microVM snapshot not allowed after configuring boot-specific resources (%s).", r), false
			}
		}
		if started {
			return 400, fault("Loading a microVM snapshot not allowed after starting the microVM."), false
		}
		var l firecracker.SnapshotLoad
		json.Unmarshal(body, &l)
		if l.MemBackend.BackendType == firecracker.MemBackendFile {
			if _, err := os.Stat(l.MemBackend.BackendPath); err != nil {
				return 400, fault("Cannot load snapshot: memory file: %v", err), false
			}
		}
		if _, err := os.Stat(l.SnapshotPath); err != nil {
			return 400, fault("Cannot load snapshot: %v", err), false
		}
		f.state = "Paused"
		if l.ResumeVM {
			f.state = "Running"
		}
	case method == "PATCH":
		if !started {
			return 400, fault("The requested operation is not supported before starting the microVM."), false
		}
	}
	f.configured[resource] = true
	return 204, nil, false
}
