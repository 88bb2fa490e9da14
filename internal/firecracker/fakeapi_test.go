package firecracker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// fakeAPI serves Firecracker's API for tests: it validates every request
// against the embedded spec, records it, and keeps just enough state to
// refuse what Firecracker refuses out of order (pre-boot calls after
// start, snapshot create while running, snapshot load on a configured
// process). It never runs a VM; it only answers as the API would.
type fakeAPI struct {
	spec    *Spec
	version string
	// onCtrlAltDel runs after SendCtrlAltDel is answered.
	onCtrlAltDel func()
	// record, if set, is called for each request.
	record func(call)
	// root is where paths the API is given are resolved: the jail root
	// for the jailer stand-in (which does not chroot), else "".
	root string

	// mu guards the fields below.
	mu         sync.Mutex
	calls      []call
	state      string // "Not started", "Running", "Paused"
	configured map[string]bool
	mmds       json.RawMessage
}

// call is one recorded request.
type call struct {
	Op      string          `json:"op"` // "PUT /drives/base"
	Body    json.RawMessage `json:"body,omitempty"`
	Invalid string          `json:"invalid,omitempty"`
}

func newFakeAPI(spec *Spec, version string) *fakeAPI {
	return &fakeAPI{spec: spec, version: version, state: "Not started", configured: map[string]bool{}}
}

// preBoot are the resources Firecracker accepts only before InstanceStart.
var preBoot = map[string]bool{
	"PUT /machine-config": true, "PUT /boot-source": true, "PUT /drives": true,
	"PUT /network-interfaces": true, "PUT /vsock": true, "PUT /mmds/config": true,
	"PUT /entropy": true, "PUT /balloon": true,
}

func (f *fakeAPI) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	c := call{Op: r.Method + " " + r.URL.Path}
	if len(body) > 0 {
		c.Body = json.RawMessage(body)
	}
	if err := f.spec.ValidateHTTP(r); err != nil {
		c.Invalid = err.Error()
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	if f.record != nil {
		f.record(c)
	}
	status, resp, after := f.handleLocked(c, r.Method, r.URL.Path, body)
	f.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if resp != nil {
		w.Write(resp)
	}
	if after != nil {
		after()
	}
}

func fault(format string, a ...any) []byte {
	b, _ := json.Marshal(apiError{FaultMessage: fmt.Sprintf(format, a...)})
	return b
}

func (f *fakeAPI) handleLocked(c call, method, path string, body []byte) (int, []byte, func()) {
	if c.Invalid != "" {
		return 400, fault("%s", c.Invalid), nil
	}
	resource := method + " /" + strings.Split(strings.TrimPrefix(path, "/"), "/")[0]
	if path == "/mmds/config" {
		resource = "PUT /mmds/config"
	}
	started := f.state != "Not started"
	if preBoot[resource] && started {
		return 400, fault("The requested operation is not supported after starting the microVM."), nil
	}
	switch {
	case method == "GET" && path == "/":
		b, _ := json.Marshal(InstanceInfo{AppName: "Firecracker", ID: "anonymous-instance", State: f.state, VMMVersion: f.version})
		return 200, b, nil
	case method == "GET" && path == "/version":
		b, _ := json.Marshal(Version{FirecrackerVersion: f.version})
		return 200, b, nil
	case method == "GET" && path == "/mmds":
		if f.mmds == nil {
			return 404, fault("The MMDS data store is not initialized."), nil
		}
		return 200, f.mmds, nil
	case method == "PUT" && path == "/mmds":
		f.mmds = body
	case method == "PUT" && path == "/actions":
		var a instanceAction
		json.Unmarshal(body, &a)
		switch a.ActionType {
		case ActionInstanceStart:
			if started {
				return 400, fault("The microVM is already running."), nil
			}
			if !f.configured["PUT /boot-source"] {
				return 400, fault("Cannot start microvm without kernel configuration."), nil
			}
			f.state = "Running"
		case ActionSendCtrlAltDel:
			if f.state != "Running" {
				return 400, fault("The microVM is not running."), nil
			}
			return 204, nil, f.onCtrlAltDel
		}
	case method == "PUT" && path == "/logger":
		// Firecracker opens log_path for appending and logs there.
		var l Logger
		json.Unmarshal(body, &l)
		if lf, err := os.OpenFile(filepath.Join(f.root, l.LogPath), os.O_WRONLY|os.O_APPEND, 0); err == nil {
			fmt.Fprintln(lf, "stand-in logger: configured")
			if n, _ := strconv.Atoi(os.Getenv("FCVM_TEST_LOG_FLOOD")); n > 0 {
				// A guest making the VMM log without end.
				line := []byte(strings.Repeat("y", 1023) + "\n")
				for range n >> 10 {
					lf.Write(line)
				}
				fmt.Fprintln(lf, "stand-in logger: last line")
			}
			lf.Close()
		}
	case method == "PATCH" && path == "/vm":
		var v vmBody
		json.Unmarshal(body, &v)
		if !started {
			return 400, fault("The microVM has not been started."), nil
		}
		if v.State == VMPaused {
			f.state = "Paused"
		} else {
			f.state = "Running"
		}
	case method == "PUT" && path == "/snapshot/create":
		if f.state != "Paused" {
			return 400, fault("Cannot create snapshot: the microVM is not paused."), nil
		}
		// Write the files, as Firecracker would, so callers that move them
		// have something to move. Their content is not a snapshot.
		var sc SnapshotCreate
		json.Unmarshal(body, &sc)
		for _, p := range []string{sc.SnapshotPath, sc.MemFilePath} {
			if err := os.WriteFile(filepath.Join(f.root, p), []byte("stand-in: not a snapshot\n"), 0o600); err != nil {
				return 400, fault("Cannot create snapshot: %v", err), nil
			}
		}
	case method == "PUT" && path == "/snapshot/load":
		for r := range f.configured {
			if r != "PUT /logger" && r != "PUT /metrics" {
				return 400, fault("Loading a microVM snapshot not allowed after configuring boot-specific resources (%s).", r), nil
			}
		}
		if started {
			return 400, fault("Loading a microVM snapshot not allowed after starting the microVM."), nil
		}
		var l SnapshotLoad
		json.Unmarshal(body, &l)
		f.state = "Paused"
		if l.ResumeVM {
			f.state = "Running"
		}
	case method == "PATCH":
		if !started {
			return 400, fault("The requested operation is not supported before starting the microVM."), nil
		}
	}
	f.configured[resource] = true
	return 204, nil, nil
}
