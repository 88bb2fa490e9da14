package sandboxapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fcvm/fcvm/internal/atomicfile"
	"github.com/fcvm/fcvm/internal/state"
)

// sandbox is what the API knows of one sandbox beyond its VM's record.
type sandbox struct {
	ID         string            `json:"sandboxID"` // also the VM's name
	VMID       string            `json:"vmID"`
	TemplateID string            `json:"templateID"`
	Ref        string            `json:"ref"`             // image reference or snapshot tag
	Clone      bool              `json:"clone,omitempty"` // Ref is a snapshot tag
	Metadata   map[string]string `json:"metadata,omitempty"`
	EnvVars    map[string]string `json:"envVars,omitempty"`
	StartedAt  time.Time         `json:"startedAt"`
	EndAt      time.Time         `json:"endAt"`
	// Token authenticates the data plane (X-Access-Token).
	Token     string `json:"envdAccessToken"`
	CPUs      int    `json:"cpuCount"`
	MemoryMiB int    `json:"memoryMB"`
	// Paused: the sandbox is the snapshot PauseTag and has no VM. A
	// resumed sandbox is a clone of PauseTag, which stays until the next
	// pause or the kill.
	Paused   bool   `json:"paused,omitempty"`
	PauseTag string `json:"pauseTag,omitempty"`
	Pauses   int    `json:"pauses,omitempty"` // numbers the pause snapshots
	// Publish are the sandbox's published ports, as fcvm run -p takes
	// them.
	Publish []string `json:"publish,omitempty"`
	// Forks numbers the fork snapshots made of this sandbox; ForkTag is
	// the fork snapshot this sandbox is a clone of, removed with the
	// last sandbox that uses it.
	Forks   int    `json:"forks,omitempty"`
	ForkTag string `json:"forkTag,omitempty"`

	// op serializes pause, resume and kill of this sandbox; it is held
	// across the VM calls, s.mu never is.
	op *sync.Mutex
}

// createRequest is the part of E2B's NewSandbox that fcvm honours.
type createRequest struct {
	TemplateID string            `json:"templateID"`
	Timeout    *int64            `json:"timeout"` // seconds
	Metadata   map[string]string `json:"metadata"`
	EnvVars    map[string]string `json:"envVars"`
	// AllowInternetAccess false gives the sandbox no network.
	AllowInternetAccess *bool `json:"allow_internet_access"`
	// Ports is an fcvm extension: guest ports to publish on the host's
	// loopback.
	Ports []portRequest `json:"ports"`
}

// sandboxJSON is E2B's Sandbox, ListedSandbox and SandboxDetail in one.
type sandboxJSON struct {
	SandboxID       string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	ClientID        string            `json:"clientID"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain"`
	Alias           string            `json:"alias,omitempty"`
	StartedAt       *time.Time        `json:"startedAt,omitempty"`
	EndAt           *time.Time        `json:"endAt,omitempty"`
	State           string            `json:"state,omitempty"`
	CPUCount        int               `json:"cpuCount,omitempty"`
	MemoryMB        int               `json:"memoryMB,omitempty"`
	DiskSizeMB      int               `json:"diskSizeMB,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
}

func (sb *sandbox) json(detail bool) sandboxJSON {
	j := sandboxJSON{
		SandboxID:   sb.ID,
		TemplateID:  sb.TemplateID,
		ClientID:    "fcvm",
		EnvdVersion: envdVersion,
	}
	if detail {
		started, end := sb.StartedAt, sb.EndAt
		j.StartedAt, j.EndAt = &started, &end
		j.State = "running"
		if sb.Paused {
			j.State = "paused"
		}
		j.CPUCount, j.MemoryMB = sb.CPUs, sb.MemoryMiB
		j.Metadata = sb.Metadata
	}
	return j
}

// newID returns a sandbox ID: 20 characters of [a-z0-9], short enough
// that PORT-ID stays a DNS label.
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 20)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func newToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// create is POST /v2/sandboxes.
func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.TemplateID == "" {
		writeError(w, http.StatusBadRequest, "templateID: required")
		return
	}
	timeout, err := lifetime(req.Timeout)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	for k := range req.EnvVars {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("envVars: bad name %q", k))
			return
		}
	}
	sb := &sandbox{
		ID:         newID(),
		TemplateID: req.TemplateID,
		Metadata:   req.Metadata,
		EnvVars:    req.EnvVars,
		Token:      newToken(),
		op:         &sync.Mutex{},
		CPUs:       1,
		MemoryMiB:  512,
	}
	if !s.reserve(1) {
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%d sandboxes are running or starting, the most this server allows: kill one first", s.cfg.MaxSandboxes))
		return
	}
	defer s.unreserve(1)
	sb.Ref, sb.Clone = s.resolveTemplate(req.TemplateID)
	for _, p := range req.Ports {
		spec, err := p.spec()
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		sb.Publish = append(sb.Publish, spec)
	}
	if len(sb.Publish) > maxPorts {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("ports: at most %d", maxPorts))
		return
	}
	noNet := req.AllowInternetAccess != nil && !*req.AllowInternetAccess
	// The VM outlives this request: a client that hangs up must not leave
	// a half-started sandbox nobody knows about.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Minute)
	defer cancel()
	if status, err := s.launch(ctx, sb, timeout, noNet); err != nil {
		writeError(w, status, err.Error())
		return
	}
	j := sb.json(false)
	j.EnvdAccessToken = sb.Token
	writeJSON(w, http.StatusCreated, j)
}

// reserve counts n sandboxes about to start against MaxSandboxes, or
// reports that there is no room for them.
func (s *Server) reserve(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sandboxes)+s.starting+n > s.cfg.MaxSandboxes {
		return false
	}
	s.starting += n
	return true
}

func (s *Server) unreserve(n int) {
	s.mu.Lock()
	s.starting -= n
	s.mu.Unlock()
}

// launch starts sb's VM, records it and enters it in the table, to end
// timeout from now. The status goes with the error.
func (s *Server) launch(ctx context.Context, sb *sandbox, timeout time.Duration, noNet bool) (int, error) {
	vmID, err := s.start(ctx, sb, noNet)
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("create sandbox from %s: %w", sb.TemplateID, err)
	}
	sb.VMID = vmID
	sb.StartedAt = time.Now().UTC()
	sb.EndAt = sb.StartedAt.Add(timeout)
	if err := s.save(sb); err != nil {
		s.cfg.Engine.Remove(vmID, true)
		return http.StatusInternalServerError, err
	}
	s.mu.Lock()
	s.sandboxes[sb.ID] = sb
	s.armLocked(sb)
	s.mu.Unlock()
	s.log.Info("sandbox created", "sandbox", sb.ID, "template", sb.TemplateID, "vm", vmID)
	return 0, nil
}

// lifetime checks the timeout (seconds) of a create or a connect:
// DefaultTimeout when absent, else between 1 s and MaxTimeout.
func lifetime(seconds *int64) (time.Duration, error) {
	if seconds == nil {
		return DefaultTimeout, nil
	}
	if *seconds <= 0 || *seconds > int64(MaxTimeout/time.Second) {
		return 0, fmt.Errorf("timeout %d: must be between 1 and %d seconds", *seconds, int(MaxTimeout/time.Second))
	}
	return time.Duration(*seconds) * time.Second, nil
}

// resolveTemplate turns a template ID into what to start: an alias first,
// then a snapshot tag (a clone, the fast path), else an image reference.
func (s *Server) resolveTemplate(id string) (ref string, clone bool) {
	ref = id
	if alias, ok := s.cfg.Templates[id]; ok {
		ref = alias
	}
	snaps, _ := s.cfg.Engine.Snapshots()
	for _, m := range snaps {
		if m.Tag == ref {
			return ref, true
		}
	}
	return ref, false
}

// keepAlive is the sandbox container's main process: E2B sandboxes live
// until killed, and a VM lives as long as its container's main process.
// It exits on SIGTERM so that a stop is quick.
const keepAlive = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"

// start runs the fcvm binary to bring sb's VM up as a detached supervisor
// and returns the VM's ID.
func (s *Server) start(ctx context.Context, sb *sandbox, noNet bool) (string, error) {
	var args []string
	if tag := sb.PauseTag; tag != "" || sb.Clone {
		if tag == "" {
			tag = sb.Ref
		}
		args = []string{"snapshot", "run", "-d", "--name", sb.ID, "--label", Label + "=" + sb.TemplateID}
		for _, p := range sb.Publish {
			args = append(args, "--publish", p)
		}
		args = append(args, tag)
	} else {
		args = []string{"run", "-d", "--name", sb.ID,
			"--label", Label + "=" + sb.TemplateID,
			"--cpus", strconv.Itoa(sb.CPUs), "--memory", strconv.Itoa(sb.MemoryMiB),
			"--entrypoint", "/bin/sh"}
		if noNet {
			args = append(args, "--network", "none")
		}
		for _, p := range sb.Publish {
			args = append(args, "--publish", p)
		}
		args = append(args, sb.Ref, "-c", keepAlive)
	}
	cmd := exec.CommandContext(ctx, s.cfg.Fcvm, args...)
	// The supervisor left behind has no business with the API key.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "FCVM_API_KEY=") })
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimPrefix(strings.TrimSpace(stderr.String()), "fcvm: ")
		if msg == "" {
			msg = err.Error()
		}
		return "", errors.New(msg)
	}
	id := strings.TrimSpace(stdout.String())
	if id == "" {
		return "", errors.New("fcvm printed no VM ID")
	}
	return id, nil
}

// save writes sb's record atomically; it holds a token, so only the
// owner may read it.
func (s *Server) save(sb *sandbox) error {
	b, err := json.Marshal(sb)
	if err != nil {
		return fmt.Errorf("encode sandbox %s: %w", sb.ID, err)
	}
	return atomicfile.WriteFile(s.stateFile(sb.ID), b, 0o600)
}

// restore reads back the sandboxes of earlier runs.
func (s *Server) restore() error {
	ents, err := os.ReadDir(s.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("read %s: %w", s.cfg.StateDir, err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		b, err := os.ReadFile(s.stateFile(id))
		if err != nil {
			return fmt.Errorf("read sandbox %s: %w", id, err)
		}
		sb := &sandbox{op: &sync.Mutex{}}
		if err := json.Unmarshal(b, sb); err != nil || sb.ID != id {
			s.log.Warn("unreadable sandbox record: dropped", "sandbox", id, "err", err)
			os.Remove(s.stateFile(id))
			continue
		}
		if !sb.Paused && !s.alive(sb) {
			// It ended while no server watched (killed by its timer as
			// the last server stopped, or by fcvm stop): clean up.
			s.log.Info("sandbox's VM is not running: removed", "sandbox", id)
			if err := s.reap(sb); err != nil {
				s.log.Warn("remove ended sandbox", "sandbox", id, "err", err)
			}
			continue
		}
		s.mu.Lock()
		s.sandboxes[id] = sb
		s.armLocked(sb)
		s.mu.Unlock()
	}
	return nil
}

// alive reports whether sb's VM is running.
func (s *Server) alive(sb *sandbox) bool {
	rec, err := s.cfg.Engine.Inspect(sb.VMID)
	return err == nil && rec.Effective() == state.StatusRunning
}

// armLocked (re)sets the timer that kills sb at its end. A paused
// sandbox has none: it waits for connect.
func (s *Server) armLocked(sb *sandbox) {
	if s.closed || sb.Paused {
		return
	}
	if t := s.timers[sb.ID]; t != nil {
		t.Stop()
	}
	id := sb.ID
	s.timers[id] = time.AfterFunc(time.Until(sb.EndAt), func() {
		// Close waits for a kill under way, so a server that stops does
		// not leave one half done.
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		s.reaping.Add(1)
		s.mu.Unlock()
		defer s.reaping.Done()
		s.log.Info("sandbox timed out", "sandbox", id)
		if err := s.destroy(id); err != nil {
			s.log.Warn("kill timed-out sandbox", "sandbox", id, "err", err)
		}
	})
}

// lookup returns a copy of sandbox id, or nil: the table's own may
// change under s.mu while the caller reads it.
func (s *Server) lookup(id string) *sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.sandboxes[id]
	if sb == nil {
		return nil
	}
	c := *sb
	return &c
}

// destroy kills sandbox id's VM and forgets it. An unknown id is
// errNoSandbox.
func (s *Server) destroy(id string) error {
	s.mu.Lock()
	sb := s.sandboxes[id]
	if sb == nil {
		s.mu.Unlock()
		return errNoSandbox
	}
	delete(s.sandboxes, id)
	if t := s.timers[id]; t != nil {
		t.Stop()
		delete(s.timers, id)
	}
	release := s.releaseLocked(id)
	s.mu.Unlock()
	release()
	// A pause or resume under way finishes first; sb is out of the table,
	// so it changes nothing else, and what it made is removed here.
	sb.op.Lock()
	defer sb.op.Unlock()
	return s.reap(sb)
}

// reap removes what sandbox sb left on the host: its VM, its pause
// snapshot, its record. What is gone already is no error.
func (s *Server) reap(sb *sandbox) error {
	var err error
	if sb.VMID != "" {
		err = s.cfg.Engine.Remove(sb.VMID, true)
		if errors.Is(err, state.ErrNotFound) {
			err = nil
		}
	}
	if sb.PauseTag != "" {
		if rmErr := s.cfg.Engine.RemoveSnapshot(sb.PauseTag, true); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
	}
	if rmErr := os.Remove(s.stateFile(sb.ID)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	if sb.ForkTag != "" && !s.forkInUse(sb.ForkTag) {
		// Never forced: a clone still running (one not in the table yet
		// while the server restores) keeps it.
		if rmErr := s.cfg.Engine.RemoveSnapshot(sb.ForkTag, false); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			s.log.Warn("remove fork snapshot", "snapshot", sb.ForkTag, "err", rmErr)
		}
	}
	if err != nil {
		return fmt.Errorf("kill sandbox %s: %w", sb.ID, err)
	}
	return nil
}

var errNoSandbox = errors.New("sandboxapi: no such sandbox")

func notFound(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", id))
}

// live returns sandbox id if its VM still runs. One whose VM ended on its
// own (its container exited, someone ran fcvm rm) is destroyed and nil.
func (s *Server) live(id string) *sandbox {
	sb := s.lookup(id)
	if sb == nil || sb.Paused || s.alive(sb) {
		return sb
	}
	s.log.Info("sandbox's VM ended: forgotten", "sandbox", id)
	if err := s.destroy(id); err != nil && !errors.Is(err, errNoSandbox) {
		s.log.Warn("clean up ended sandbox", "sandbox", id, "err", err)
	}
	return nil
}

// get is GET /sandboxes/{id}.
func (s *Server) get(w http.ResponseWriter, id string) {
	sb := s.live(id)
	if sb == nil {
		notFound(w, id)
		return
	}
	writeJSON(w, http.StatusOK, sb.json(true))
}

// kill is DELETE /sandboxes/{id}.
func (s *Server) kill(w http.ResponseWriter, r *http.Request, id string) {
	if err := s.destroy(id); err != nil {
		if errors.Is(err, errNoSandbox) {
			notFound(w, id)
			return
		}
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// setTimeout is POST /sandboxes/{id}/timeout: the sandbox now ends
// timeout seconds from now, sooner or later than before.
func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request, id string) {
	var req struct {
		Timeout *int64 `json:"timeout"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Timeout == nil || *req.Timeout < 0 || time.Duration(*req.Timeout)*time.Second > MaxTimeout {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("timeout: required, between 0 and %d seconds", int(MaxTimeout/time.Second)))
		return
	}
	s.mu.Lock()
	sb := s.sandboxes[id]
	if sb == nil {
		s.mu.Unlock()
		notFound(w, id)
		return
	}
	sb.EndAt = time.Now().UTC().Add(time.Duration(*req.Timeout) * time.Second)
	s.armLocked(sb)
	err := s.save(sb)
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// list is GET /v2/sandboxes: the running sandboxes, filtered by state and
// metadata, oldest first, in pages of limit with x-next-token.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := pageLimit(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	wantMeta, err := parseMetadataQuery(q.Get("metadata"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	states := []string{"running", "paused"}
	if st := q.Get("state"); st != "" {
		states = strings.Split(st, ",")
	}
	s.mu.Lock()
	ids := make([]string, 0, len(s.sandboxes))
	for id := range s.sandboxes {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	all := make([]*sandbox, 0, len(ids))
	for _, id := range ids {
		if sb := s.live(id); sb != nil {
			all = append(all, sb)
		}
	}
	slices.SortFunc(all, func(a, b *sandbox) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	next := q.Get("nextToken")
	out := []sandboxJSON{}
	for _, sb := range all {
		if next != "" {
			if sb.ID == next {
				next = ""
			}
			continue
		}
		if !matches(sb.Metadata, wantMeta) || !slices.Contains(states, sb.json(true).State) {
			continue
		}
		if len(out) == limit {
			w.Header().Set("x-next-token", out[len(out)-1].SandboxID)
			break
		}
		out = append(out, sb.json(true))
	}
	writeJSON(w, http.StatusOK, out)
}

// pageLimit reads a listing's limit: 100 when absent, at most 1000.
func pageLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, fmt.Errorf("limit %q: must be between 1 and 1000", v)
	}
	return n, nil
}

// parseMetadataQuery reads the SDK's metadata filter: a query string of
// its own (k=v&k2=v2) with keys and values escaped once more.
func parseMetadataQuery(v string) (map[string]string, error) {
	if v == "" {
		return nil, nil
	}
	vals, err := url.ParseQuery(v)
	if err != nil {
		return nil, fmt.Errorf("metadata %q: %w", v, err)
	}
	m := map[string]string{}
	for k, vs := range vals {
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(vs[0])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("metadata %q: %w", v, err)
		}
		m[key] = val
	}
	return m, nil
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}
