package sandboxapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/engine"
	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/state"
)

const testKey = "test-key"

// newTestServer is a Server over an empty data directory: the real
// engine, with no VM in it. Fcvm is a binary that must never run: no
// test here gets as far as starting a VM.
func newTestServer(t *testing.T) *Server {
	t.Helper()
	dirs := datadir.Dirs{Data: t.TempDir(), Runtime: t.TempDir()}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	s, err := New(Config{
		Engine:    engine.New(dirs, log),
		APIKey:    testKey,
		Fcvm:      "/nonexistent/fcvm",
		StateDir:  filepath.Join(dirs.Data, "sandboxes"),
		MaxUpload: 1024,
		Log:       log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// addSandbox puts a sandbox whose VM does not exist in s's table and on
// disk, as a create would have.
func addSandbox(t *testing.T, s *Server, id string, started time.Time, meta map[string]string) *sandbox {
	t.Helper()
	return addSandboxVM(t, s, id, "vm-"+id, started, meta)
}

// addRunningSandbox is addSandbox with a VM record in the engine's store
// that says running, its "supervisor" a sleep this test started (what a
// kill of the sandbox would end).
func addRunningSandbox(t *testing.T, s *Server, id string, started time.Time, meta map[string]string) *sandbox {
	t.Helper()
	sleep := exec.Command("sleep", "3600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sleep.Process.Kill()
		sleep.Wait()
	})
	proc, err := state.ProcessOf(sleep.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(s.cfg.Engine.Dirs().VMs())
	if err != nil {
		t.Fatal(err)
	}
	rec := &state.Record{Name: id, Status: state.StatusRunning, Supervisor: proc}
	if err := store.Create(rec); err != nil {
		t.Fatal(err)
	}
	return addSandboxVM(t, s, id, rec.ID, started, meta)
}

func addSandboxVM(t *testing.T, s *Server, id, vmID string, started time.Time, meta map[string]string) *sandbox {
	t.Helper()
	sb := &sandbox{ID: id, VMID: vmID, TemplateID: "tpl", Token: "tok-" + id,
		StartedAt: started, EndAt: started.Add(time.Hour), Metadata: meta, op: &sync.Mutex{}}
	if err := s.save(sb); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.sandboxes[id] = sb
	s.armLocked(sb)
	s.mu.Unlock()
	return sb
}

type call struct {
	method, path string
	body         string
	header       map[string]string
}

func do(t *testing.T, s *Server, c call) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	return w
}

// wantAPIError checks an E2B error: the status, and a one-line JSON body
// {"code":status,"message":...} containing msg.
func wantAPIError(t *testing.T, w *httptest.ResponseRecorder, status int, msg string) {
	t.Helper()
	if w.Code != status {
		t.Errorf("status %d, want %d (body %s)", w.Code, status, w.Body)
	}
	body := w.Body.String()
	if strings.Count(strings.TrimSpace(body), "\n") != 0 {
		t.Errorf("error body is not one line: %q", body)
	}
	var e apiError
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Code != status || !strings.Contains(e.Message, msg) {
		t.Errorf("error %+v, want code %d and a message with %q", e, status, msg)
	}
}

var key = map[string]string{"X-API-KEY": testKey}

func TestControlPlaneNeedsTheKey(t *testing.T) {
	s := newTestServer(t)
	addSandbox(t, s, "sb1", time.Now(), nil)
	for _, c := range []call{
		{method: "POST", path: "/v2/sandboxes", body: `{"templateID":"x"}`},
		{method: "GET", path: "/v2/sandboxes"},
		{method: "GET", path: "/sandboxes/sb1"},
		{method: "DELETE", path: "/sandboxes/sb1"},
		{method: "POST", path: "/sandboxes/sb1/timeout", body: `{"timeout":1}`},
	} {
		for name, h := range map[string]map[string]string{
			"missing": nil,
			"wrong":   {"X-API-KEY": "not-" + testKey},
			"prefix":  {"X-API-KEY": testKey[:4]},
		} {
			c.header = h
			t.Run(c.method+c.path+"/"+name, func(t *testing.T) {
				wantAPIError(t, do(t, s, c), http.StatusUnauthorized, "API key")
			})
		}
	}
	// Nothing happened: the sandbox is still there, its end unchanged.
	if sb := s.lookup("sb1"); sb == nil || time.Until(sb.EndAt) < 59*time.Minute {
		t.Errorf("a refused call changed the sandbox: %+v", sb)
	}
	if w := do(t, s, call{method: "GET", path: "/health"}); w.Code != http.StatusOK {
		t.Errorf("GET /health without a key: %d, want 200", w.Code)
	}
}

func TestCreateBadInput(t *testing.T) {
	s := newTestServer(t)
	for _, tc := range []struct {
		name, body, msg string
	}{
		{"malformed", `{"templateID":`, "decode request body"},
		{"not an object", `[1,2]`, "decode request body"},
		{"wrong type", `{"templateID":7}`, "decode request body"},
		{"no template", `{}`, "templateID: required"},
		{"zero timeout", `{"templateID":"x","timeout":0}`, "timeout 0"},
		{"huge timeout", `{"templateID":"x","timeout":100000000}`, "timeout 100000000"},
		{"bad env", `{"templateID":"x","envVars":{"A=B":"c"}}`, "envVars"},
		{"oversized", `{"templateID":"` + strings.Repeat("x", MaxJSONBody) + `"}`, "over 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantAPIError(t, do(t, s, call{method: "POST", path: "/v2/sandboxes", body: tc.body, header: key}), http.StatusBadRequest, tc.msg)
		})
	}
	// Nothing left behind.
	ents, _ := os.ReadDir(s.cfg.StateDir)
	if len(ents) != 0 || len(s.sandboxes) != 0 {
		t.Errorf("bad creates left %d records and %d sandboxes", len(ents), len(s.sandboxes))
	}
}

func TestUnknownSandbox(t *testing.T) {
	s := newTestServer(t)
	for _, c := range []call{
		{method: "GET", path: "/sandboxes/nope"},
		{method: "DELETE", path: "/sandboxes/nope"},
		{method: "POST", path: "/sandboxes/nope/timeout", body: `{"timeout":5}`},
		{method: "POST", path: "/sandboxes/nope/pause"},
		{method: "POST", path: "/v2/sandboxes/nope/connect", body: `{"timeout":5}`},
		{method: "POST", path: "/sandboxes/nope/fork", body: `{"count":2}`},
		{method: "POST", path: "/sandboxes/nope/snapshots", body: `{"name":"fine"}`},
		{method: "GET", path: "/sandboxes/nope/ports"},
	} {
		c.header = key
		t.Run(c.method, func(t *testing.T) { wantAPIError(t, do(t, s, c), http.StatusNotFound, `"nope" not found`) })
	}
	// The data plane answers for an unknown sandbox as E2B's proxy does.
	w := do(t, s, call{method: "GET", path: "/health", header: map[string]string{"E2b-Sandbox-Id": "nope"}})
	wantAPIError(t, w, http.StatusBadGateway, `"nope" not found`)
	wantAPIError(t, do(t, s, call{method: "GET", path: "/nowhere", header: key}), http.StatusNotFound, "no such endpoint")
	wantAPIError(t, do(t, s, call{method: "DELETE", path: "/templates/nope", header: key}), http.StatusNotFound, `"nope" not found`)
}

func TestTimeoutBadInputAndExpiry(t *testing.T) {
	s := newTestServer(t)
	addSandbox(t, s, "sb1", time.Now(), nil)
	for body, msg := range map[string]string{
		`{`:               "decode request body",
		`{"timeout":"5"}`: "decode request body",
		`{}`:              "timeout: required",
		`{"timeout":-1}`:  "timeout: required",
	} {
		wantAPIError(t, do(t, s, call{method: "POST", path: "/sandboxes/sb1/timeout", body: body, header: key}), http.StatusBadRequest, msg)
	}
	// A timeout of 0 ends the sandbox now; its VM being gone already is
	// no error, and its record goes.
	if w := do(t, s, call{method: "POST", path: "/sandboxes/sb1/timeout", body: `{"timeout":0}`, header: key}); w.Code != http.StatusNoContent {
		t.Fatalf("timeout 0: %d %s", w.Code, w.Body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.lookup("sb1") != nil {
		if time.Now().After(deadline) {
			t.Fatal("sandbox outlived its timeout")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(s.stateFile("sb1")); !os.IsNotExist(err) {
		t.Errorf("record of the expired sandbox: %v, want gone", err)
	}
}

func TestListPagesAndFilters(t *testing.T) {
	s := newTestServer(t)
	t0 := time.Now().UTC()
	addRunningSandbox(t, s, "a", t0, map[string]string{"team": "x y"})
	addRunningSandbox(t, s, "b", t0.Add(time.Second), map[string]string{"team": "z"})
	addRunningSandbox(t, s, "c", t0.Add(2*time.Second), map[string]string{"team": "x y"})
	// A sandbox whose VM ended on its own is not listed, and is forgotten.
	addSandbox(t, s, "ended", t0, map[string]string{"team": "x y"})
	ids := func(w *httptest.ResponseRecorder) []string {
		t.Helper()
		var out []sandboxJSON
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("list: %v: %s", err, w.Body)
		}
		var ids []string
		for _, sb := range out {
			ids = append(ids, sb.SandboxID)
		}
		return ids
	}
	w := do(t, s, call{method: "GET", path: "/v2/sandboxes?limit=2", header: key})
	if diff := cmp.Diff([]string{"a", "b"}, ids(w)); diff != "" || w.Header().Get("x-next-token") != "b" {
		t.Errorf("page 1 (-want +got):\n%s next %q", diff, w.Header().Get("x-next-token"))
	}
	w = do(t, s, call{method: "GET", path: "/v2/sandboxes?limit=2&nextToken=b", header: key})
	if diff := cmp.Diff([]string{"c"}, ids(w)); diff != "" || w.Header().Get("x-next-token") != "" {
		t.Errorf("page 2 (-want +got):\n%s", diff)
	}
	// The SDK's metadata filter: team=x%20y, escaped once more.
	w = do(t, s, call{method: "GET", path: "/v2/sandboxes?metadata=team%3Dx%2520y", header: key})
	if diff := cmp.Diff([]string{"a", "c"}, ids(w)); diff != "" {
		t.Errorf("metadata filter (-want +got):\n%s", diff)
	}
	w = do(t, s, call{method: "GET", path: "/v2/sandboxes?state=paused", header: key})
	if got := ids(w); len(got) != 0 {
		t.Errorf("state=paused: %v, want none", got)
	}
	if s.lookup("ended") != nil {
		t.Error("the sandbox whose VM ended is still known")
	}
	w = do(t, s, call{method: "GET", path: "/sandboxes/a", header: key})
	var got sandboxJSON
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.SandboxID != "a" || got.State != "running" || got.Metadata["team"] != "x y" || got.EnvdAccessToken != "" {
		t.Errorf("GET /sandboxes/a: %d %s", w.Code, w.Body)
	}
	wantAPIError(t, do(t, s, call{method: "GET", path: "/v2/sandboxes?limit=0", header: key}), http.StatusBadRequest, "limit")
	wantAPIError(t, do(t, s, call{method: "GET", path: "/v2/sandboxes?metadata=%3B%25zz", header: key}), http.StatusBadRequest, "metadata")
}

func TestDataPlaneAuthAndRouting(t *testing.T) {
	s := newTestServer(t)
	sb := addSandbox(t, s, "sb1", time.Now(), nil)
	hdr := func(tok string) map[string]string {
		return map[string]string{"E2b-Sandbox-Id": "sb1", "E2b-Sandbox-Port": EnvdPort, "X-Access-Token": tok}
	}
	wantAPIError(t, do(t, s, call{method: "GET", path: "/health", header: hdr("")}), http.StatusUnauthorized, "access token")
	wantAPIError(t, do(t, s, call{method: "GET", path: "/health", header: hdr("wrong")}), http.StatusUnauthorized, "access token")
	// The control plane's key is not the sandbox's token.
	wantAPIError(t, do(t, s, call{method: "GET", path: "/health", header: map[string]string{"E2b-Sandbox-Id": "sb1", "X-API-KEY": testKey}}), http.StatusUnauthorized, "access token")
	if w := do(t, s, call{method: "GET", path: "/health", header: hdr(sb.Token)}); w.Code != http.StatusNoContent {
		t.Errorf("GET /health: %d, want 204", w.Code)
	}
	// Other ports are the sandbox's published ones, with the same token.
	h := hdr(sb.Token)
	h["E2b-Sandbox-Port"] = "8080"
	wantAPIError(t, do(t, s, call{method: "GET", path: "/", header: h}), http.StatusBadGateway, "no such VM") // its VM is gone
	h["X-Access-Token"] = "wrong"
	wantAPIError(t, do(t, s, call{method: "GET", path: "/", header: h}), http.StatusUnauthorized, "access token")

	// Host-based routing, as the SDK addresses a sandbox without
	// E2B_SANDBOX_URL.
	req := httptest.NewRequest("GET", "/health", nil)
	req.Host = "49983-sb1.fcvm.example:3999"
	req.Header.Set("X-Access-Token", sb.Token)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusNoContent {
		t.Errorf("GET /health by Host: %d, want 204 (%s)", w.Code, w.Body)
	}
}

func TestDataPlaneSandbox(t *testing.T) {
	for host, want := range map[string]string{
		"49983-abc.e2b.local:3999": "abc 49983",
		"49983-abc.e2b.local":      "abc 49983",
		"3000-abc.e2b.local":       "abc 3000",
		"127.0.0.1:3999":           "",
		"api.e2b.local":            "",
		"49983-.e2b.local":         "",
		"0-abc.e2b.local":          "",
		"65536-abc.e2b.local":      "",
		"x-abc.e2b.local":          "",
		"[::1]:3999":               "",
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Host = host
		id, port, ok := dataPlaneSandbox(req)
		if got := strings.TrimSpace(id + " " + port); got != want || ok != (want != "") {
			t.Errorf("host %q: %q (%v), want %q", host, got, ok, want)
		}
	}
}

// streamError reads a stream answer that is an error alone: HTTP 200 and
// one end-stream envelope carrying {"error":{code,message}}.
func streamError(t *testing.T, w *httptest.ResponseRecorder) connectError {
	t.Helper()
	flags, msg, err := readEnvelope(w.Body, MaxJSONBody)
	var end struct {
		Error connectError `json:"error"`
	}
	if w.Code != 200 || err != nil || flags != flagEndStream || json.Unmarshal(msg, &end) != nil || w.Body.Len() != 0 {
		t.Errorf("want a stream of one end-stream envelope, got %d %q (%v)", w.Code, msg, err)
	}
	if end.Error.Message == "" || strings.Contains(end.Error.Message, "\n") {
		t.Errorf("stream error %+v: want a one-line message", end.Error)
	}
	return end.Error
}

// envelope frames msg as a Connect envelope.
func envelope(flags byte, msg string) string {
	return string(appendEnvelope(nil, flags, []byte(msg)))
}

func TestConnectBadInput(t *testing.T) {
	s := newTestServer(t)
	sb := addSandbox(t, s, "sb1", time.Now(), nil)
	h := map[string]string{"E2b-Sandbox-Id": "sb1", "X-Access-Token": sb.Token, "Content-Type": "application/connect+json"}
	var huge [5]byte
	binary.BigEndian.PutUint32(huge[1:], MaxJSONBody+1)
	for _, tc := range []struct {
		name, body, code string
		ct               string
	}{
		{"wrong content type", envelope(0, `{"process":{"cmd":"true"}}`), codeInvalidArgument, "application/json"},
		{"truncated header", "\x00\x00", codeInvalidArgument, ""},
		{"truncated message", envelope(0, `{"process":{"cmd":"true"}}`)[:10], codeInvalidArgument, ""},
		{"oversized message", string(huge[:]), codeInvalidArgument, ""},
		{"compressed", envelope(flagCompressed, `{}`), codeUnimplemented, ""},
		{"malformed JSON", envelope(0, `{"process":`), codeInvalidArgument, ""},
		{"no cmd", envelope(0, `{"process":{}}`), codeInvalidArgument, ""},
		{"pty without a size", envelope(0, `{"process":{"cmd":"sh"},"pty":{}}`), codeInvalidArgument, ""},
		{"huge pty", envelope(0, `{"process":{"cmd":"sh"},"pty":{"size":{"cols":80,"rows":100000}}}`), codeInvalidArgument, ""},
		{"bad deadline", envelope(0, `{"process":{"cmd":"true"}}`), codeInvalidArgument, "bad-deadline"},
		// The VM of this sandbox does not exist: an error, not a hang.
		{"VM gone", envelope(0, `{"process":{"cmd":"true"}}`), codeUnavailable, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hh := map[string]string{}
			for k, v := range h {
				hh[k] = v
			}
			switch tc.ct {
			case "":
			case "bad-deadline":
				hh["Connect-Timeout-Ms"] = "soon"
			default:
				hh["Content-Type"] = tc.ct
			}
			w := do(t, s, call{method: "POST", path: "/process.Process/Start", body: tc.body, header: hh})
			if e := streamError(t, w); e.Code != tc.code {
				t.Errorf("got %d %q, want a stream ending with code %s", w.Code, w.Body, tc.code)
			}
		})
	}
	// Unary calls.
	h["Content-Type"] = "application/json"
	for _, tc := range []struct{ path, body, code string }{
		{"/process.Process/SendSignal", `{"process":{"pid":5},"signal":"SIGNAL_SIGKILL"}`, codeNotFound},
		{"/process.Process/SendSignal", `{"process":{"pid":5},"signal":"SIGNAL_SIGHUP"}`, codeInvalidArgument},
		{"/process.Process/SendSignal", `{"process":`, codeInvalidArgument},
		{"/process.Process/SendInput", `{"process":{"pid":5},"input":{"stdin":"aGk="}}`, codeNotFound},
		{"/process.Process/SendInput", `{"process":{"tag":"x"},"input":{"pty":"aGk="}}`, codeNotFound},
		{"/process.Process/Update", `{"process":{"pid":5},"pty":{"size":{"cols":80,"rows":24}}}`, codeNotFound},
		{"/process.Process/Update", `{"process":`, codeInvalidArgument},
		{"/filesystem.Filesystem/Stat", `{"path":"a\u0000b"}`, codeInvalidArgument},
		{"/filesystem.Filesystem/Stat", `{"path":""}`, codeInvalidArgument},
		{"/filesystem.Filesystem/Stat", `{"path":"/etc"}`, codeUnavailable},
		{"/filesystem.Filesystem/CreateWatcher", `{"path":"a\u0000b"}`, codeInvalidArgument},
		{"/filesystem.Filesystem/CreateWatcher", `{"path":"/tmp"}`, codeUnavailable},
		{"/filesystem.Filesystem/GetWatcherEvents", `{"watcherId":"nope"}`, codeNotFound},
		{"/filesystem.Filesystem/RemoveWatcher", `{"watcherId":"nope"}`, codeNotFound},
		{"/process.Process/StreamInput", `{}`, codeUnimplemented},
	} {
		w := do(t, s, call{method: "POST", path: tc.path, body: tc.body, header: h})
		var e connectError
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code != tc.code {
			t.Errorf("%s %s: got %d %s, want code %s", tc.path, tc.body, w.Code, w.Body, tc.code)
		}
	}
	// Connect to a command that does not exist, and with bad input.
	h["Content-Type"] = "application/connect+json"
	for _, tc := range []struct{ body, code string }{
		{envelope(0, `{"process":{"pid":5}}`), codeNotFound},
		{envelope(0, `{"process":`), codeInvalidArgument},
		{"\x00", codeInvalidArgument},
	} {
		w := do(t, s, call{method: "POST", path: "/process.Process/Connect", body: tc.body, header: h})
		if e := streamError(t, w); e.Code != tc.code {
			t.Errorf("Connect %q: got %+v, want a stream ending with code %s", tc.body, e, tc.code)
		}
	}
	for _, tc := range []struct{ body, code string }{
		{envelope(0, `{}`), codeInvalidArgument},
		{envelope(0, `{"path":"/tmp","recursive":true}`), codeUnavailable}, // the VM is gone
		{envelope(0, `{"path":`), codeInvalidArgument},
	} {
		w := do(t, s, call{method: "POST", path: "/filesystem.Filesystem/WatchDir", body: tc.body, header: h})
		if e := streamError(t, w); e.Code != tc.code {
			t.Errorf("WatchDir %q: got %+v, want a stream ending with code %s", tc.body, e, tc.code)
		}
	}
	h["Content-Type"] = "application/json"
	if w := do(t, s, call{method: "POST", path: "/process.Process/List", body: `{}`, header: h}); w.Code != 200 || !strings.Contains(w.Body.String(), `"processes":[]`) {
		t.Errorf("List: %d %s", w.Code, w.Body)
	}
}

func TestFilesBadInput(t *testing.T) {
	s := newTestServer(t)
	sb := addSandbox(t, s, "sb1", time.Now(), nil)
	h := map[string]string{"E2b-Sandbox-Id": "sb1", "X-Access-Token": sb.Token}
	wantAPIError(t, do(t, s, call{method: "GET", path: "/files", header: h}), http.StatusBadRequest, "path: required")
	wantAPIError(t, do(t, s, call{method: "GET", path: "/files?path=a%00b", header: h}), http.StatusBadRequest, "NUL")
	wantAPIError(t, do(t, s, call{method: "GET", path: "/files?path=" + strings.Repeat("a", maxPath+1), header: h}), http.StatusBadRequest, "too long")
	wantAPIError(t, do(t, s, call{method: "PUT", path: "/files?path=/a", header: h}), http.StatusMethodNotAllowed, "GET or POST")

	h["Content-Type"] = "text/plain"
	wantAPIError(t, do(t, s, call{method: "POST", path: "/files?path=/a", body: "x", header: h}), http.StatusUnsupportedMediaType, "Content-Type")
	h["Content-Type"] = "application/octet-stream"
	h["Content-Encoding"] = "gzip"
	wantAPIError(t, do(t, s, call{method: "POST", path: "/files?path=/a", body: "x", header: h}), http.StatusUnsupportedMediaType, "Content-Encoding")
	delete(h, "Content-Encoding")
	wantAPIError(t, do(t, s, call{method: "POST", path: "/files", body: "x", header: h}), http.StatusBadRequest, "path: required")

	// Multipart: a malformed body, and one with no file in it.
	h["Content-Type"] = "multipart/form-data; boundary=XX"
	wantAPIError(t, do(t, s, call{method: "POST", path: "/files", body: "garbage", header: h}), http.StatusBadRequest, "multipart")
	wantAPIError(t, do(t, s, call{method: "POST", path: "/files", body: "--XX--\r\n", header: h}), http.StatusBadRequest, "no file")
	var mp bytes.Buffer
	mp.WriteString("--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\x00b\"\r\n\r\nhi\r\n--XX--\r\n")
	w := do(t, s, call{method: "POST", path: "/files", body: mp.String(), header: h})
	if w.Code != http.StatusBadRequest {
		t.Errorf("multipart file name with NUL: %d %s, want 400", w.Code, w.Body)
	}
}

func TestGuestPath(t *testing.T) {
	for _, tc := range []struct{ in, user, want string }{
		{"/a/b", "", "/a/b"},
		{"a/b", "", "/root/a/b"},
		{"a", "user", "/home/user/a"},
		{"/a/../../../etc/passwd", "", "/etc/passwd"},
		{"../../../etc", "", "/etc"},
		{"/a//b/./c/", "", "/a/b/c"},
	} {
		got, err := guestPath(tc.in, tc.user)
		if err != nil || got != tc.want {
			t.Errorf("guestPath(%q, %q) = %q, %v; want %q", tc.in, tc.user, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "a\x00b", "\xff", strings.Repeat("a", maxPath+1)} {
		if got, err := guestPath(bad, ""); err == nil {
			t.Errorf("guestPath(%q) = %q, want an error", bad, got)
		}
	}
}

func TestStreamFraming(t *testing.T) {
	w := httptest.NewRecorder()
	st := newStream(w)
	if err := st.send(map[string]any{"event": processEvent{Start: &startEvent{PID: 7}}}); err != nil {
		t.Fatal(err)
	}
	st.send(map[string]any{"event": processEvent{Data: &dataEvent{Stdout: []byte("hi\n")}}})
	st.end(cerr(codeDeadlineExceeded, "too slow"))
	if err := st.send(struct{}{}); err == nil {
		t.Error("send after end: no error")
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/connect+json" {
		t.Errorf("content type %q", ct)
	}
	var got []string
	r := bytes.NewReader(w.Body.Bytes())
	for {
		flags, msg, err := readEnvelope(r, MaxJSONBody)
		if err == nil {
			got = append(got, string(rune('0'+flags))+" "+string(msg))
			continue
		}
		if !strings.Contains(err.Error(), io.EOF.Error()) {
			t.Fatal(err)
		}
		break
	}
	want := []string{
		`0 {"event":{"start":{"pid":7}}}`,
		`0 {"event":{"data":{"stdout":"aGkK"}}}`,
		`2 {"error":{"code":"deadline_exceeded","message":"too slow"}}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stream (-want +got):\n%s", diff)
	}
}

func TestRestoreForgetsGoneVMs(t *testing.T) {
	s := newTestServer(t)
	addSandbox(t, s, "gone", time.Now(), nil)
	// One whose VM ended while no server watched: its VM is removed too.
	store, err := state.Open(s.cfg.Engine.Dirs().VMs())
	if err != nil {
		t.Fatal(err)
	}
	ended := &state.Record{Name: "ended", Status: state.StatusExited}
	if err := store.Create(ended); err != nil {
		t.Fatal(err)
	}
	addSandboxVM(t, s, "ended", ended.ID, time.Now(), nil)
	os.WriteFile(filepath.Join(s.cfg.StateDir, "junk.json"), []byte("{"), 0o600)
	s.Close()
	s2, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if len(s2.sandboxes) != 0 {
		t.Errorf("restored %d sandboxes whose VMs do not exist", len(s2.sandboxes))
	}
	if ents, _ := os.ReadDir(s.cfg.StateDir); len(ents) != 0 {
		t.Errorf("%d records left, want none", len(ents))
	}
	if _, err := s.cfg.Engine.Inspect(ended.ID); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("the ended sandbox's VM: %v, want it removed", err)
	}
}

func TestPauseAndConnectBadInput(t *testing.T) {
	s := newTestServer(t)
	addSandbox(t, s, "sb1", time.Now(), nil)
	paused := addSandbox(t, s, "zz", time.Now(), map[string]string{"p": "1"})
	s.mu.Lock()
	s.sandboxes["zz"].Paused, s.sandboxes["zz"].VMID = true, ""
	s.mu.Unlock()
	for _, c := range []call{
		{method: "POST", path: "/sandboxes/sb1/pause", body: `{"memory":`},
		{method: "POST", path: "/v2/sandboxes/sb1/connect", body: `{"timeout":"x"}`},
		{method: "POST", path: "/v2/sandboxes/sb1/connect", body: `{"timeout":-5}`},
		{method: "POST", path: "/v2/sandboxes/sb1/connect", body: strings.Repeat(" ", MaxJSONBody+1) + "{}"},
	} {
		c.header = key
		wantAPIError(t, do(t, s, c), http.StatusBadRequest, "")
	}
	wantAPIError(t, do(t, s, call{method: "POST", path: "/sandboxes/zz/pause", header: key}), http.StatusConflict, "paused already")
	// A paused sandbox is listed as such, has no data plane, and keeps
	// no timer.
	w := do(t, s, call{method: "GET", path: "/v2/sandboxes?state=paused", header: key})
	if !strings.Contains(w.Body.String(), `"sandboxID":"zz"`) || strings.Contains(w.Body.String(), `"sb1"`) || !strings.Contains(w.Body.String(), `"state":"paused"`) {
		t.Errorf("state=paused: %s", w.Body)
	}
	wantAPIError(t, do(t, s, call{method: "GET", path: "/health", header: map[string]string{"E2b-Sandbox-Id": "zz", "X-Access-Token": paused.Token}}), http.StatusBadGateway, "paused")
	// Restored across a restart without a VM.
	s.save(s.sandboxes["zz"])
	s.Close()
	s2, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if sb := s2.lookup("zz"); sb == nil || !sb.Paused {
		t.Errorf("paused sandbox after restart: %+v", sb)
	}
}

func TestCreateLimit(t *testing.T) {
	s := newTestServer(t)
	s.cfg.MaxSandboxes = 1
	addSandbox(t, s, "sb1", time.Now(), nil)
	wantAPIError(t, do(t, s, call{method: "POST", path: "/v2/sandboxes", body: `{"templateID":"x"}`, header: key}), http.StatusTooManyRequests, "the most this server allows")
}

// TestOpenAPIMatchesRoutes holds the served OpenAPI document to the
// router: every operation it lists is routed, and reaches a handler (not
// "no such endpoint" or "no such method").
func TestOpenAPIMatchesRoutes(t *testing.T) {
	s := newTestServer(t)
	sb := addSandbox(t, s, "sb1", time.Now(), nil)
	w := do(t, s, call{method: "GET", path: "/openapi.json"})
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || w.Code != 200 {
		t.Fatalf("GET /openapi.json: %d %v", w.Code, err)
	}
	ops := 0
	for path, item := range doc.Paths {
		for method := range item {
			if method == "parameters" {
				continue
			}
			ops++
			h := map[string]string{"X-API-KEY": testKey}
			if path == "/files" || strings.Contains(path, ".") && path != "/openapi.json" {
				h = map[string]string{"E2b-Sandbox-Id": "sb1", "X-Access-Token": sb.Token, "Content-Type": "application/json"}
			}
			w := do(t, s, call{method: strings.ToUpper(method), path: strings.ReplaceAll(path, "{sandboxID}", "nope"), body: "{}", header: h})
			if b := w.Body.String(); strings.Contains(b, "no such endpoint") || strings.Contains(b, "no such method") || strings.Contains(b, "not implemented") {
				t.Errorf("%s %s is in the OpenAPI document but not routed: %d %s", method, path, w.Code, b)
			}
		}
	}
	if ops < 20 {
		t.Errorf("the document lists %d operations, want every route", ops)
	}
}

func TestNewRefusesNoKey(t *testing.T) {
	if _, err := New(Config{StateDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "no API key") {
		t.Errorf("New without a key: %v", err)
	}
}

// TestExtensionsBadInput: fork, snapshots and ports refuse what they
// cannot do with a one-line error, and leave nothing behind.
func TestExtensionsBadInput(t *testing.T) {
	s := newTestServer(t)
	s.cfg.MaxSandboxes = 10
	addSandbox(t, s, "sb1", time.Now(), nil)
	clone := addSandbox(t, s, "cl1", time.Now(), nil)
	clone.Clone = true
	paused := addSandbox(t, s, "pz1", time.Now(), nil)
	paused.Paused = true
	for _, tc := range []struct {
		c      call
		status int
		msg    string
	}{
		{call{method: "POST", path: "/sandboxes/sb1/fork", body: `{"count":0}`}, 400, "between 1 and 16"},
		{call{method: "POST", path: "/sandboxes/sb1/fork", body: `{"count":17}`}, 400, "between 1 and 16"},
		{call{method: "POST", path: "/sandboxes/sb1/fork", body: `{"count":`}, 400, "decode request body"},
		{call{method: "POST", path: "/sandboxes/sb1/fork", body: `{"timeout":-1}`}, 400, "timeout"},
		{call{method: "POST", path: "/sandboxes/sb1/fork", body: `{"count":16}`}, 429, "more than this server allows"},
		{call{method: "POST", path: "/sandboxes/cl1/fork", body: `{}`}, 400, "clone"},
		{call{method: "POST", path: "/sandboxes/pz1/fork", body: `{}`}, 409, "paused"},
		{call{method: "POST", path: "/sandboxes/cl1/snapshots", body: `{}`}, 400, "clone"},
		{call{method: "POST", path: "/sandboxes/sb1/snapshots", body: `{"name":"../x"}`}, 400, "name: tag"},
		{call{method: "POST", path: "/sandboxes/sb1/snapshots", body: `{"name":"` + strings.Repeat("a", 64) + `"}`}, 400, "name: tag"},
		{call{method: "GET", path: "/snapshots?limit=0"}, 400, "limit"},
		{call{method: "POST", path: "/v2/sandboxes", body: `{"templateID":"x","ports":[{"hostPort":80,"guestPort":80}]}`}, 400, "hostPort 1024-65535"},
		{call{method: "POST", path: "/v2/sandboxes", body: `{"templateID":"x","ports":[{"hostPort":8080,"guestPort":80,"proto":"sctp"}]}`}, 400, "proto tcp or udp"},
	} {
		tc.c.header = key
		t.Run(tc.c.method+tc.c.path, func(t *testing.T) { wantAPIError(t, do(t, s, tc.c), tc.status, tc.msg) })
	}
	s.cfg.MaxSandboxes = 100
	tooMany := make([]string, maxPorts+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf(`{"hostPort":%d,"guestPort":80}`, 20000+i)
	}
	wantAPIError(t, do(t, s, call{method: "POST", path: "/v2/sandboxes", header: key,
		body: `{"templateID":"x","ports":[` + strings.Join(tooMany, ",") + `]}`}), 400, "at most 16")
	// Nothing was made: no snapshot, no new sandbox, and no fork counted
	// as under way.
	if snaps, _ := s.cfg.Engine.Snapshots(); len(snaps) != 0 {
		t.Errorf("snapshots left: %v", snaps)
	}
	if w := do(t, s, call{method: "GET", path: "/snapshots", header: key}); w.Code != 200 || strings.TrimSpace(w.Body.String()) != "[]" {
		t.Errorf("GET /snapshots: %d %s", w.Code, w.Body)
	}
	s.mu.Lock()
	n, starting := len(s.sandboxes), s.starting
	s.mu.Unlock()
	if n != 3 || starting != 0 {
		t.Errorf("%d sandboxes, %d starting; want 3 and 0", n, starting)
	}
}

// TestSnapshotsListDeleteAndCap: GET /snapshots pages and filters the
// data directory's snapshots, DELETE /templates/{id} removes one, and no
// snapshot is made beyond maxSnapshots.
func TestSnapshotsListDeleteAndCap(t *testing.T) {
	s := newTestServer(t)
	addSandbox(t, s, "sb1", time.Now(), nil)
	dir := s.cfg.Engine.Dirs().Snapshots()
	for i := range maxSnapshots {
		tag := fmt.Sprintf("snap%02d", i)
		if err := os.MkdirAll(filepath.Join(dir, tag), 0o700); err != nil {
			t.Fatal(err)
		}
		m, _ := json.Marshal(snapshot.Manifest{Tag: tag, SourceVM: "vm-sb1"})
		if err := os.WriteFile(filepath.Join(dir, tag, snapshot.ManifestFile), m, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wantAPIError(t, do(t, s, call{method: "POST", path: "/sandboxes/sb1/snapshots", body: `{"name":"one-more"}`, header: key}), http.StatusTooManyRequests, "delete some first")
	wantAPIError(t, do(t, s, call{method: "POST", path: "/sandboxes/sb1/snapshots", body: `{"name":"snap03"}`, header: key}), http.StatusConflict, "exists already")

	w := do(t, s, call{method: "GET", path: "/snapshots?limit=10&nextToken=snap09", header: key})
	var page []snapshotJSON
	if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil || len(page) != 10 || page[0].SnapshotID != "snap10" || w.Header().Get("x-next-token") != "snap19" {
		t.Errorf("second page: %d %s (next %q)", w.Code, w.Body, w.Header().Get("x-next-token"))
	}
	w = do(t, s, call{method: "GET", path: "/snapshots?name=snap42", header: key})
	if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil || len(page) != 1 || page[0].SnapshotID != "snap42" || page[0].Names[0] != "snap42" {
		t.Errorf("by name: %s", w.Body)
	}
	w = do(t, s, call{method: "GET", path: "/snapshots?sandboxID=other", header: key})
	if strings.TrimSpace(w.Body.String()) != "[]" {
		t.Errorf("another sandbox's: %s", w.Body)
	}
	if w := do(t, s, call{method: "DELETE", path: "/templates/snap42", header: key}); w.Code != http.StatusNoContent {
		t.Errorf("DELETE /templates/snap42: %d %s", w.Code, w.Body)
	}
	if _, err := os.Stat(filepath.Join(dir, "snap42")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot dir after delete: %v", err)
	}
	wantAPIError(t, do(t, s, call{method: "DELETE", path: "/templates/snap42", header: key}), http.StatusNotFound, "not found")
}

// TestPresignedFiles: a /files URL signed as the SDK's downloadUrl and
// uploadUrl sign it needs no token; a wrong, expired or misused one is
// refused.
func TestPresignedFiles(t *testing.T) {
	s := newTestServer(t)
	sb := addSandbox(t, s, "sb1", time.Now(), nil)
	sign := func(path, op, user, exp string) string {
		raw := path + ":" + op + ":" + user + ":" + sb.Token
		if exp != "" {
			raw += ":" + exp
		}
		sum := sha256.Sum256([]byte(raw))
		return "v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
	}
	h := map[string]string{"E2b-Sandbox-Id": "sb1"}
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	q := func(path, sig, user, exp string) string {
		v := url.Values{"path": {path}, "signature": {sig}}
		if user != "" {
			v.Set("username", user)
		}
		if exp != "" {
			v.Set("signature_expiration", exp)
		}
		return "/files?" + v.Encode()
	}
	// Signed right: past the check, to the guest (whose VM is gone here).
	for _, c := range []call{
		{method: "GET", path: q("/a b", sign("/a b", "read", "", ""), "", "")},
		{method: "GET", path: q("/x", sign("/x", "read", "user", future), "user", future)},
	} {
		c.header = h
		wantAPIError(t, do(t, s, c), http.StatusBadGateway, "no such VM")
	}
	for _, tc := range []struct {
		c   call
		msg string
	}{
		{call{method: "GET", path: q("/x", sign("/y", "read", "", ""), "", "")}, "invalid signature"},
		{call{method: "GET", path: q("/x", sign("/x", "write", "", ""), "", "")}, "invalid signature"},
		{call{method: "POST", path: q("/x", sign("/x", "read", "", ""), "", "")}, "invalid signature"},
		{call{method: "GET", path: q("/x", sign("/x", "read", "", ""), "root", "")}, "invalid signature"},
		{call{method: "GET", path: q("/x", sign("/x", "read", "", past), "", past)}, "expired"},
		{call{method: "GET", path: q("/x", sign("/x", "read", "", ""), "", "soon")}, "not a Unix time"},
	} {
		tc.c.header = h
		wantAPIError(t, do(t, s, tc.c), http.StatusUnauthorized, tc.msg)
	}
	// A signature opens /files only.
	wantAPIError(t, do(t, s, call{method: "GET", path: "/health?path=/x&signature=" + sign("/x", "read", "", ""), header: h}), http.StatusUnauthorized, "access token")
}
