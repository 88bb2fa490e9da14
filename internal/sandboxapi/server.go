package sandboxapi

import (
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fcvm/fcvm/internal/engine"
)

// Label marks the VMs the API made; its value is the template ID asked for.
const Label = "fcvm.sandbox"

// EnvdPort is the port the SDK addresses the data plane by
// (E2b-Sandbox-Port, and PORT-ID.DOMAIN hosts).
const EnvdPort = "49983"

// envdVersion is the envd version the server claims. The SDK gates
// features on it: 0.5.7 and later take octet-stream uploads, from 0.4.0
// on no default user is forced, from 0.3.0 stdin is optional.
const envdVersion = "0.5.7"

// Limits on what one caller may make the server hold.
const (
	// MaxJSONBody caps a control-plane JSON body and a Connect message.
	MaxJSONBody = 1 << 20
	// DefaultMaxUpload caps a file upload unless Config says otherwise.
	DefaultMaxUpload = 1 << 30
	// DefaultMaxSandboxes caps the sandboxes unless Config says otherwise.
	DefaultMaxSandboxes = 32
	// DefaultTimeout is a sandbox's life when create gives none (E2B's).
	DefaultTimeout = 300 * time.Second
	// MaxTimeout is the longest life a sandbox may be given.
	MaxTimeout = 24 * time.Hour
)

// Config is what a Server needs.
type Config struct {
	// Engine reaches the VMs.
	Engine *engine.Engine
	// APIKey authenticates the control plane; it must not be empty.
	APIKey string
	// Templates maps template aliases to what they stand for: a snapshot
	// tag or an image reference.
	Templates map[string]string
	// Fcvm is the fcvm binary that starts sandboxes as detached
	// supervisors; its environment is this process's.
	Fcvm string
	// StateDir holds one record per sandbox.
	StateDir string
	// MaxUpload caps one file upload (0: DefaultMaxUpload).
	MaxUpload int64
	// MaxSandboxes caps the sandboxes alive or starting at once
	// (0: DefaultMaxSandboxes); a create beyond it gets 429.
	MaxSandboxes int
	// Log receives what the server has to say.
	Log *slog.Logger
}

// Server is the sandbox API. Its zero value is not usable: see New.
type Server struct {
	cfg Config
	log *slog.Logger

	// mu guards the fields below.
	mu        sync.Mutex
	sandboxes map[string]*sandbox
	timers    map[string]*time.Timer
	procs     map[string]map[uint32]*process // sandbox ID → PID → process
	streams   map[string]int                 // sandbox ID → open streams
	watchers  map[string]map[string]*pollWatcher
	nextPID   uint32
	starting  int // creates under way, counted against MaxSandboxes
	closed    bool
	// reaping counts the timeout kills under way; Add only under mu
	// while !closed.
	reaping sync.WaitGroup
}

// New returns a Server for cfg with the sandboxes of earlier runs read
// back from cfg.StateDir: those whose VM is gone are forgotten, those
// past their end are killed, the others get their timers again.
func New(cfg Config) (*Server, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("sandbox API: no API key")
	}
	if cfg.Engine == nil || cfg.StateDir == "" {
		return nil, errors.New("sandbox API: no engine or state directory")
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = DefaultMaxUpload
	}
	if cfg.MaxSandboxes <= 0 {
		cfg.MaxSandboxes = DefaultMaxSandboxes
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", cfg.StateDir, err)
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Log,
		sandboxes: map[string]*sandbox{},
		timers:    map[string]*time.Timer{},
		procs:     map[string]map[uint32]*process{},
		streams:   map[string]int{},
		watchers:  map[string]map[string]*pollWatcher{},
		nextPID:   1000,
	}
	if err := s.restore(); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops the timers and waits for the timeout kills under way.
// Sandboxes go on: they are VMs with their own supervisors, and the next
// Server takes them back. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for id, t := range s.timers {
		t.Stop()
		delete(s.timers, id)
	}
	s.mu.Unlock()
	s.reaping.Wait()
	return nil
}

// ServeHTTP routes a request to the data plane when it names a sandbox,
// else to the control plane.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id, port, ok := dataPlaneSandbox(r); ok {
		s.serveData(w, r, id, port)
		return
	}
	s.serveControl(w, r)
}

// dataPlaneSandbox returns the sandbox and port a data-plane request is
// for: the E2b-Sandbox-Id and E2b-Sandbox-Port headers (E2B_SANDBOX_URL
// mode; the port is envd's unless given) or a Host of the form
// PORT-ID.DOMAIN (what the SDK builds without E2B_SANDBOX_URL, and what
// getHost gives for a sandbox's own ports).
func dataPlaneSandbox(r *http.Request) (id, port string, ok bool) {
	if id := r.Header.Get("E2b-Sandbox-Id"); id != "" {
		port := r.Header.Get("E2b-Sandbox-Port")
		if port == "" {
			port = EnvdPort
		}
		return id, port, true
	}
	host := r.Host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	label, _, ok := strings.Cut(host, ".")
	if !ok {
		return "", "", false
	}
	port, id, ok = strings.Cut(label, "-")
	if n, err := strconv.Atoi(port); !ok || err != nil || n < 1 || n > 65535 || id == "" {
		return "", "", false
	}
	return id, port, true
}

// openAPI describes what the server implements; a test holds it to the
// routes.
//
//go:embed openapi.json
var openAPI []byte

// serveControl is the E2B control plane.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/health" {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/openapi.json" {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
		return
	}
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "invalid or missing API key (X-API-KEY)")
		return
	}
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(p) == 2 && p[0] == "v2" && p[1] == "sandboxes" && r.Method == http.MethodPost:
		s.create(w, r)
	case len(p) == 2 && p[0] == "v2" && p[1] == "sandboxes" && r.Method == http.MethodGet:
		s.list(w, r)
	case len(p) == 2 && p[0] == "sandboxes" && r.Method == http.MethodGet:
		s.get(w, p[1])
	case len(p) == 2 && p[0] == "sandboxes" && r.Method == http.MethodDelete:
		s.kill(w, r, p[1])
	case len(p) == 3 && p[0] == "sandboxes" && p[2] == "timeout" && r.Method == http.MethodPost:
		s.setTimeout(w, r, p[1])
	case len(p) == 3 && p[0] == "sandboxes" && p[2] == "pause" && r.Method == http.MethodPost:
		s.pause(w, r, p[1])
	case len(p) == 4 && p[0] == "v2" && p[1] == "sandboxes" && p[3] == "connect" && r.Method == http.MethodPost:
		s.connect(w, r, p[2])
	case len(p) == 3 && p[0] == "sandboxes" && p[2] == "fork" && r.Method == http.MethodPost:
		s.fork(w, r, p[1])
	case len(p) == 3 && p[0] == "sandboxes" && p[2] == "snapshots" && r.Method == http.MethodPost:
		s.createSnapshot(w, r, p[1])
	case len(p) == 3 && p[0] == "sandboxes" && p[2] == "ports" && r.Method == http.MethodGet:
		s.ports(w, p[1])
	case len(p) == 1 && p[0] == "snapshots" && r.Method == http.MethodGet:
		s.listSnapshots(w, r)
	case len(p) == 2 && p[0] == "templates" && r.Method == http.MethodDelete:
		s.deleteTemplate(w, p[1])
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("%s %s: no such endpoint", r.Method, r.URL.Path))
	}
}

// authorized checks the control plane's API key in constant time.
func (s *Server) authorized(r *http.Request) bool {
	got := r.Header.Get("X-API-KEY")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.APIKey)) == 1
}

// apiError is the E2B error body; code repeats the HTTP status.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Code: status, Message: oneLine(msg)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":500,"message":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decodeJSON reads one JSON value of at most MaxJSONBody bytes into v.
// An empty body leaves v as it is.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxJSONBody))
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("request body over %d bytes", MaxJSONBody)
		}
		return fmt.Errorf("decode request body: %w", err)
	}
	return nil
}

// oneLine keeps an error message to one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// stateFile is where sandbox id's record lives.
func (s *Server) stateFile(id string) string {
	return filepath.Join(s.cfg.StateDir, id+".json")
}
