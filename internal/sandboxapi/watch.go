package sandboxapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/engine"
)

// Directory watches: filesystem.Filesystem/WatchDir streams a directory's
// changes; CreateWatcher, GetWatcherEvents and RemoveWatcher do the same
// for clients that poll. The guest agent watches with inotify
// (engine.Watch); each watch counts against the sandbox's maxStreams, and
// a polled watcher holds at most maxWatcherEvents events between polls.

// maxWatcherEvents bounds the events a polled watcher keeps.
const maxWatcherEvents = 4096

// fsEvent is envd's FilesystemEvent.
type fsEvent struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

var eventTypes = map[channel.WatchOp]string{
	channel.WatchCreate: "EVENT_TYPE_CREATE",
	channel.WatchWrite:  "EVENT_TYPE_WRITE",
	channel.WatchRemove: "EVENT_TYPE_REMOVE",
	channel.WatchRename: "EVENT_TYPE_RENAME",
	channel.WatchChmod:  "EVENT_TYPE_CHMOD",
}

type watchRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive"`
}

// startWatch checks req and starts the guest's watch.
func (s *Server) startWatch(ctx context.Context, r *http.Request, sb *sandbox, req watchRequest) (*engine.Watch, *connectError) {
	p, err := guestPath(req.Path, basicUser(r))
	if err != nil {
		return nil, cerr(codeInvalidArgument, "%v", err)
	}
	wt, err := s.cfg.Engine.Watch(ctx, sb.VMID, channel.WatchRequest{Path: p, Recursive: req.Recursive})
	var ge *channel.GuestError
	switch {
	case errors.As(err, &ge) && strings.Contains(ge.Msg, "no such file or directory"):
		return nil, cerr(codeNotFound, "path %s: no such directory", p)
	case errors.As(err, &ge) && strings.Contains(ge.Msg, "not a directory"):
		return nil, cerr(codeInvalidArgument, "path %s: not a directory", p)
	case err != nil:
		return nil, cerr(codeUnavailable, "%v", err)
	}
	return wt, nil
}

// fsWatchDir is filesystem.Filesystem/WatchDir.
func (s *Server) fsWatchDir(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req watchRequest
	ctx, end, ok := s.beginStream(w, r, sb, &req)
	if !ok {
		return
	}
	defer end()
	wt, e := s.startWatch(ctx, r, sb, req)
	if e != nil {
		writeStreamError(w, e)
		return
	}
	defer wt.Close()
	stop := context.AfterFunc(ctx, func() { wt.Close() })
	defer stop()
	st := newStream(w)
	if st.send(map[string]any{"start": struct{}{}}) != nil {
		return
	}
	defer keepalive(st, map[string]any{"keepalive": struct{}{}})()
	for {
		ev, ok, err := wt.Next()
		switch {
		case err != nil && ctx.Err() == context.DeadlineExceeded:
			st.end(cerr(codeDeadlineExceeded, "watch ran out of time (Connect-Timeout-Ms)"))
			return
		case err != nil:
			if ctx.Err() == nil {
				st.end(cerr(codeUnavailable, "%v", err))
			}
			return
		case !ok:
			st.end(nil)
			return
		}
		if st.send(map[string]any{"filesystem": fsEvent{Name: ev.Name, Type: eventTypes[ev.Op]}}) != nil {
			return
		}
	}
}

// pollWatcher is a watch whose events wait for GetWatcherEvents.
type pollWatcher struct {
	wt *engine.Watch

	mu     sync.Mutex // guards the fields below
	events []fsEvent
	lost   bool
	err    *connectError // the watch ended with it
}

func (s *Server) fsCreateWatcher(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req watchRequest
	if e := readUnaryRequest(w, r, &req); e != nil {
		writeUnaryError(w, e)
		return
	}
	if e := s.openStream(sb.ID); e != nil {
		writeUnaryError(w, e)
		return
	}
	wt, e := s.startWatch(context.WithoutCancel(r.Context()), r, sb, req)
	if e != nil {
		s.closeStream(sb.ID)
		writeUnaryError(w, e)
		return
	}
	pw := &pollWatcher{wt: wt}
	id := newToken()[:16]
	s.mu.Lock()
	if s.watchers[sb.ID] == nil {
		s.watchers[sb.ID] = map[string]*pollWatcher{}
	}
	s.watchers[sb.ID][id] = pw
	s.mu.Unlock()
	go func() {
		defer s.closeStream(sb.ID)
		for {
			ev, ok, err := wt.Next()
			pw.mu.Lock()
			switch {
			case err != nil:
				pw.err = cerr(codeUnavailable, "%v", err)
			case !ok:
				pw.err = cerr(codeNotFound, "the watched directory is gone")
			case len(pw.events) >= maxWatcherEvents:
				pw.lost = true
			default:
				pw.events = append(pw.events, fsEvent{Name: ev.Name, Type: eventTypes[ev.Op]})
			}
			done := pw.err != nil
			pw.mu.Unlock()
			if done {
				return
			}
		}
	}()
	writeJSON(w, http.StatusOK, map[string]string{"watcherId": id})
}

// watcher returns the sandbox's polled watcher id, or nil.
func (s *Server) watcher(sandboxID, id string) *pollWatcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watchers[sandboxID][id]
}

func (s *Server) fsGetWatcherEvents(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		WatcherID string `json:"watcherId"`
	}
	if e := readUnaryRequest(w, r, &req); e != nil {
		writeUnaryError(w, e)
		return
	}
	pw := s.watcher(sb.ID, req.WatcherID)
	if pw == nil {
		writeUnaryError(w, cerr(codeNotFound, "watcher %q not found", req.WatcherID))
		return
	}
	pw.mu.Lock()
	evs, lost, e := pw.events, pw.lost, pw.err
	pw.events, pw.lost = nil, false
	pw.mu.Unlock()
	if lost {
		writeUnaryError(w, cerr(codeResourceExhausted, "watcher %s: more than %d events between polls; some were lost", req.WatcherID, maxWatcherEvents))
		return
	}
	if len(evs) == 0 && e != nil {
		writeUnaryError(w, e)
		return
	}
	if evs == nil {
		evs = []fsEvent{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": evs})
}

func (s *Server) fsRemoveWatcher(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		WatcherID string `json:"watcherId"`
	}
	if e := readUnaryRequest(w, r, &req); e != nil {
		writeUnaryError(w, e)
		return
	}
	s.mu.Lock()
	pw := s.watchers[sb.ID][req.WatcherID]
	delete(s.watchers[sb.ID], req.WatcherID)
	s.mu.Unlock()
	if pw == nil {
		writeUnaryError(w, cerr(codeNotFound, "watcher %q not found", req.WatcherID))
		return
	}
	pw.wt.Close()
	writeJSON(w, http.StatusOK, struct{}{})
}

// releaseLocked forgets the commands and polled watchers of a sandbox
// that goes away, and returns what ends them, to be called without s.mu.
func (s *Server) releaseLocked(sandboxID string) func() {
	procs, watchers := s.procs[sandboxID], s.watchers[sandboxID]
	delete(s.procs, sandboxID)
	delete(s.watchers, sandboxID)
	return func() {
		for _, p := range procs {
			p.x.Close()
		}
		for _, pw := range watchers {
			pw.wt.Close()
		}
	}
}
