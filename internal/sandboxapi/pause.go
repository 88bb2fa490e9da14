package sandboxapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Pause and resume. Pausing snapshots the sandbox's VM (memory and disk)
// under a tag of its own and removes the VM; connect starts a clone of
// that snapshot under the same sandbox ID, its processes where they were.
// A clone cannot be snapshotted (its memory maps its snapshot's file), so
// only a sandbox booted from an image can be paused, once; the snapshot
// goes when the sandbox is killed.

// pause is POST /sandboxes/{id}/pause: 204, 404, or 409 when the sandbox
// is paused already.
func (s *Server) pause(w http.ResponseWriter, r *http.Request, id string) {
	var req struct {
		Memory *bool `json:"memory"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sb := s.lockSandbox(w, id)
	if sb == nil {
		return
	}
	defer sb.op.Unlock()
	if sb.Paused {
		writeError(w, http.StatusConflict, fmt.Sprintf("sandbox %s is paused already", id))
		return
	}
	if sb.Clone || sb.PauseTag != "" {
		// Its memory is a private mapping of a snapshot's, which fcvm
		// cannot snapshot again (yet).
		writeError(w, http.StatusBadRequest, fmt.Sprintf("sandbox %s runs as a clone of a snapshot, which cannot be paused: only sandboxes booted from an image can", id))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Minute)
	defer cancel()
	tag := fmt.Sprintf("sbx-%s-%d", id, sb.Pauses+1)
	if _, err := s.cfg.Engine.Snapshot(ctx, sb.VMID, tag); err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("pause sandbox %s: %v", id, err))
		return
	}
	s.mu.Lock()
	if t := s.timers[id]; t != nil {
		t.Stop()
		delete(s.timers, id)
	}
	release := s.releaseLocked(id)
	oldVM, oldTag := sb.VMID, sb.PauseTag
	sb.Paused, sb.PauseTag, sb.Pauses, sb.VMID = true, tag, sb.Pauses+1, ""
	err := s.save(sb)
	s.mu.Unlock()
	release()
	// The snapshot is the sandbox now; what it was made from can go.
	err = errors.Join(err, s.cfg.Engine.Remove(oldVM, true))
	if oldTag != "" {
		err = errors.Join(err, s.cfg.Engine.RemoveSnapshot(oldTag, true))
	}
	if err != nil {
		s.log.Warn("pause: clean up", "sandbox", id, "err", err)
	}
	s.log.Info("sandbox paused", "sandbox", id, "snapshot", tag)
	w.WriteHeader(http.StatusNoContent)
}

// lockSandbox takes sandbox id's op lock and returns it, or answers 404
// and returns nil, also when the sandbox was killed while it waited.
func (s *Server) lockSandbox(w http.ResponseWriter, id string) *sandbox {
	s.mu.Lock()
	sb := s.sandboxes[id]
	s.mu.Unlock()
	if sb == nil {
		notFound(w, id)
		return nil
	}
	sb.op.Lock()
	if s.lookup(id) == nil {
		sb.op.Unlock()
		notFound(w, id)
		return nil
	}
	return sb
}

// connect is POST /v2/sandboxes/{id}/connect: a running sandbox answers
// 200 (its end moved to at least timeout from now), a paused one is
// resumed and answers 201.
func (s *Server) connect(w http.ResponseWriter, r *http.Request, id string) {
	var req struct {
		Timeout *int64 `json:"timeout"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	timeout, err := lifetime(req.Timeout)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sb := s.lockSandbox(w, id)
	if sb == nil {
		return
	}
	defer sb.op.Unlock()
	status := http.StatusOK
	if sb.Paused {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Minute)
		defer cancel()
		vmID, err := s.start(ctx, sb, false)
		if err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("resume sandbox %s: %v", id, err))
			return
		}
		status = http.StatusCreated
		s.mu.Lock()
		sb.VMID, sb.Paused = vmID, false
		s.mu.Unlock()
		s.log.Info("sandbox resumed", "sandbox", id, "vm", vmID)
	}
	s.mu.Lock()
	if end := time.Now().UTC().Add(timeout); status == http.StatusCreated || end.After(sb.EndAt) {
		sb.EndAt = end
	}
	s.armLocked(sb)
	err = s.save(sb)
	j := sb.json(true)
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	j.EnvdAccessToken = sb.Token
	writeJSON(w, status, j)
}
