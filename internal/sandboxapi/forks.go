package sandboxapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fcvm/fcvm/internal/engine"
	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/state"
)

// fcvm's extensions, in E2B's shapes where E2B has one: fork (clone N
// sandboxes from a running one: a snapshot, then N clones of it),
// snapshots of a sandbox as templates (create, list, delete), and
// published ports.

// maxFork bounds the clones one fork makes.
const maxFork = 16

// maxPorts bounds the ports a sandbox publishes.
const maxPorts = 16

// maxSnapshots bounds the snapshots of the data directory beyond which
// the API makes no more that stay (each holds the sandbox's memory and
// disk): the caller deletes some first.
const maxSnapshots = 64

// portRequest is a port to publish: on the host's loopback only (an API
// caller does not get to open ports to the network) and above 1023.
type portRequest struct {
	HostPort  int    `json:"hostPort"`
	GuestPort int    `json:"guestPort"`
	Proto     string `json:"proto"`
}

func (p portRequest) spec() (string, error) {
	proto := p.Proto
	if proto == "" {
		proto = "tcp"
	}
	if p.HostPort < 1024 || p.HostPort > 65535 || p.GuestPort < 1 || p.GuestPort > 65535 || proto != "tcp" && proto != "udp" {
		return "", fmt.Errorf("ports: %+v: want hostPort 1024-65535, guestPort 1-65535, proto tcp or udp", p)
	}
	return fmt.Sprintf("127.0.0.1:%d:%d/%s", p.HostPort, p.GuestPort, proto), nil
}

// portJSON is a published port.
type portJSON struct {
	HostIP    string `json:"hostIP"`
	HostPort  int    `json:"hostPort"`
	GuestPort int    `json:"guestPort"`
	Proto     string `json:"proto"`
}

// ports is GET /sandboxes/{id}/ports.
func (s *Server) ports(w http.ResponseWriter, id string) {
	sb := s.live(id)
	if sb == nil {
		notFound(w, id)
		return
	}
	out := []portJSON{}
	if !sb.Paused {
		rec, err := s.cfg.Engine.Inspect(sb.VMID)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		for _, p := range rec.Network.Ports {
			out = append(out, portJSON{HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort, Proto: p.Proto})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// servePort proxies a request for port of sandbox sb (E2b-Sandbox-Port,
// or a Host of PORT-ID.DOMAIN as the SDK's getHost gives) to the host
// side of that port, if the sandbox publishes it. It takes the sandbox's
// access token, as E2B's traffic token (e2b-traffic-access-token) or as
// X-Access-Token, and passes neither on.
func (s *Server) servePort(w http.ResponseWriter, r *http.Request, sb *sandbox, port string) {
	tok := r.Header.Get("E2b-Traffic-Access-Token")
	if tok == "" {
		tok = r.Header.Get("X-Access-Token")
	}
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(sb.Token)) != 1 {
		writeError(w, http.StatusUnauthorized, "invalid or missing access token (e2b-traffic-access-token or X-Access-Token)")
		return
	}
	rec, err := s.cfg.Engine.Inspect(sb.VMID)
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %s: %v", sb.ID, err))
		return
	}
	var target string
	for _, p := range rec.Network.Ports {
		if strconv.Itoa(p.GuestPort) == port && p.Proto == "tcp" {
			host := p.HostIP
			if host == "" || host == "0.0.0.0" {
				host = "127.0.0.1"
			}
			target = net.JoinHostPort(host, strconv.Itoa(p.HostPort))
			break
		}
	}
	if target == "" {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %s does not publish port %s: publish it when creating the sandbox (ports)", sb.ID, port))
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", target
			for _, h := range []string{"E2b-Sandbox-Id", "E2b-Sandbox-Port", "E2b-Traffic-Access-Token", "X-Access-Token", "X-Api-Key"} {
				pr.Out.Header.Del(h)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %s port %s: %v", sb.ID, port, err))
		},
	}
	proxy.ServeHTTP(w, r)
}

// snapshotOf snapshots sandbox id as tag, holding its op lock: answers
// the error and returns false when it cannot be.
func (s *Server) snapshotOf(w http.ResponseWriter, r *http.Request, id, tag string) (*sandbox, bool) {
	sb := s.lockSandbox(w, id)
	if sb == nil {
		return nil, false
	}
	defer sb.op.Unlock()
	if sb.Paused {
		writeError(w, http.StatusConflict, fmt.Sprintf("sandbox %s is paused: resume it with connect first", id))
		return nil, false
	}
	if sb.Clone || sb.PauseTag != "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("sandbox %s runs as a clone of a snapshot, which cannot be snapshotted: only sandboxes booted from an image can", id))
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Minute)
	defer cancel()
	if _, err := s.cfg.Engine.Snapshot(ctx, sb.VMID, tag); err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("snapshot sandbox %s: %v", id, err))
		return nil, false
	}
	s.mu.Lock()
	c := *sb
	s.mu.Unlock()
	return &c, true
}

// forkResult is one clone's outcome in a fork's answer.
type forkResult struct {
	Sandbox *sandboxJSON `json:"sandbox,omitempty"`
	Error   *apiError    `json:"error,omitempty"`
}

// fork is POST /sandboxes/{id}/fork: count clones of the running sandbox,
// each a new sandbox with its metadata and env vars, from one snapshot
// that goes with the last of them.
func (s *Server) fork(w http.ResponseWriter, r *http.Request, id string) {
	var req struct {
		Timeout *int64 `json:"timeout"`
		Count   *int   `json:"count"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	count := 1
	if req.Count != nil {
		count = *req.Count
	}
	if count < 1 || count > maxFork {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("count %d: must be between 1 and %d", count, maxFork))
		return
	}
	timeout, err := lifetime(req.Timeout)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !s.reserve(count) {
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%d more sandboxes would be more than this server allows (%d): kill some first", count, s.cfg.MaxSandboxes))
		return
	}
	defer s.unreserve(count)
	s.mu.Lock()
	parent := s.sandboxes[id]
	n := 0
	if parent != nil {
		parent.Forks++
		n = parent.Forks
		err = s.save(parent)
	}
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	tag := fmt.Sprintf("fork-%s-%d", id, n)
	src, ok := s.snapshotOf(w, r, id, tag)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Minute)
	defer cancel()
	results := make([]forkResult, count)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb := &sandbox{
				ID: newID(), TemplateID: src.TemplateID, Ref: tag, Clone: true, ForkTag: tag,
				Metadata: maps.Clone(src.Metadata), EnvVars: maps.Clone(src.EnvVars),
				Token: newToken(), op: &sync.Mutex{}, CPUs: src.CPUs, MemoryMiB: src.MemoryMiB,
			}
			if status, err := s.launch(ctx, sb, timeout, false); err != nil {
				results[i].Error = &apiError{Code: status, Message: oneLine(err.Error())}
				return
			}
			j := sb.json(false)
			j.EnvdAccessToken = sb.Token
			results[i].Sandbox = &j
		}()
	}
	wg.Wait()
	if !s.forkInUse(tag) {
		if err := s.cfg.Engine.RemoveSnapshot(tag, false); err != nil {
			s.log.Warn("remove unused fork snapshot", "snapshot", tag, "err", err)
		}
	}
	s.log.Info("sandbox forked", "sandbox", id, "snapshot", tag, "clones", count)
	writeJSON(w, http.StatusCreated, results)
}

// forkInUse reports whether a sandbox in the table is a clone of tag.
func (s *Server) forkInUse(tag string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sb := range s.sandboxes {
		if sb.ForkTag == tag {
			return true
		}
	}
	return false
}

// snapshotJSON is E2B's SnapshotInfo, with fcvm's details.
type snapshotJSON struct {
	SnapshotID string    `json:"snapshotID"`
	Names      []string  `json:"names"`
	SandboxID  string    `json:"sandboxID,omitempty"`
	Created    time.Time `json:"createdAt"`
	Clones     int       `json:"clones"`
}

// createSnapshot is POST /sandboxes/{id}/snapshots: a snapshot of the
// running sandbox that new sandboxes can be created from (its name is a
// templateID). It stays until deleted.
func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request, id string) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	tag := req.Name
	if tag == "" {
		tag = "snap-" + id + "-" + newToken()[:8]
	}
	if err := snapshot.ValidTag(tag); err != nil {
		writeError(w, http.StatusBadRequest, "name: "+err.Error())
		return
	}
	snaps, err := s.cfg.Engine.Snapshots()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if slices.ContainsFunc(snaps, func(m engine.SnapshotInfo) bool { return m.Tag == tag }) {
		writeError(w, http.StatusConflict, fmt.Sprintf("snapshot %s exists already: choose another name", tag))
		return
	}
	if len(snaps) >= maxSnapshots {
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%d snapshots exist, the most this server makes: delete some first (DELETE /templates/{snapshotID})", len(snaps)))
		return
	}
	if _, ok := s.snapshotOf(w, r, id, tag); !ok {
		return
	}
	writeJSON(w, http.StatusCreated, snapshotJSON{SnapshotID: tag, Names: []string{tag}, SandboxID: id, Created: time.Now().UTC()})
}

func (s *Server) snapshotExists(tag string) bool {
	snaps, _ := s.cfg.Engine.Snapshots()
	return slices.ContainsFunc(snaps, func(m engine.SnapshotInfo) bool { return m.Tag == tag })
}

// listSnapshots is GET /snapshots: every snapshot of the data directory
// (each can be a templateID), filtered by sandboxID and name, in pages.
func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := pageLimit(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	snaps, err := s.cfg.Engine.Snapshots()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// A snapshot's source is a VM ID; the sandbox it was is the VM's name.
	byVM := map[string]string{}
	if recs, err := s.cfg.Engine.List(); err == nil || len(recs) > 0 {
		for _, rec := range recs {
			byVM[rec.ID] = rec.Name
		}
	}
	wantSandbox, wantName, next := q.Get("sandboxID"), q.Get("name"), q.Get("nextToken")
	out := []snapshotJSON{}
	for _, m := range snaps { // sorted by tag
		if next != "" {
			if m.Tag == next {
				next = ""
			}
			continue
		}
		j := snapshotJSON{SnapshotID: m.Tag, Names: []string{m.Tag}, SandboxID: sandboxOf(m, byVM), Created: m.Created, Clones: m.Clones}
		if wantSandbox != "" && j.SandboxID != wantSandbox || wantName != "" && m.Tag != wantName {
			continue
		}
		if len(out) == limit {
			w.Header().Set("x-next-token", out[len(out)-1].SnapshotID)
			break
		}
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, out)
}

// sandboxOf names the sandbox snapshot m was made of: its source VM's
// name, or, the VM being gone, what the fork and pause tags say.
func sandboxOf(m engine.SnapshotInfo, byVM map[string]string) string {
	if name, ok := byVM[m.SourceVM]; ok {
		return name
	}
	for _, prefix := range []string{"fork-", "snap-", "sbx-"} {
		if rest, ok := strings.CutPrefix(m.Tag, prefix); ok && len(rest) > 20 && rest[20] == '-' {
			return rest[:20]
		}
	}
	return ""
}

// deleteTemplate is DELETE /templates/{id}, which the SDK's
// deleteSnapshot calls: the snapshot goes, unless sandboxes run from it.
func (s *Server) deleteTemplate(w http.ResponseWriter, tag string) {
	if !s.snapshotExists(tag) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("snapshot %q not found", tag))
		return
	}
	if err := s.cfg.Engine.RemoveSnapshot(tag, false); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, state.ErrNotFound) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("snapshot %q not found", tag))
			return
		}
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
