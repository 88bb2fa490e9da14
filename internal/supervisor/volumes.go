package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/fusepipe"
	"github.com/fcvm/fcvm/internal/state"
)

// volumeServers shares a VM's -v directories with its guest: one fuse-pipe
// server per directory, and one KindVolume stream per directory on every
// session, opened before anything else asks the guest for work so the
// guest's mounts exist before podman starts.
//
// A fuse-pipe connection is one guest mount, and its node IDs belong to
// that connection, so a volume does not survive a channel reset: after a
// reconnect the guest's mount fails with EIO and the agent refuses the new
// stream with an error saying so, which is logged here.
type volumeServers struct {
	log  *slog.Logger
	vols []state.Volume
	srvs []*fusepipe.Server

	ctx    context.Context // ends every ServeConn on close
	cancel context.CancelFunc

	mu     sync.Mutex // guards closed and additions to wg
	closed bool
	wg     sync.WaitGroup // running ServeConn goroutines
}

// volumePlans is what the guest learns about vols: where to mount each in
// the container, by index.
func volumePlans(vols []state.Volume) []channel.VolumePlan {
	var p []channel.VolumePlan
	for _, v := range vols {
		p = append(p, channel.VolumePlan{Guest: v.Guest, ReadOnly: v.ReadOnly})
	}
	return p
}

// openVolumes opens a server on each host directory. Read-only volumes
// are enforced by their servers, whatever the guest mounts.
func openVolumes(vols []state.Volume, log *slog.Logger) (*volumeServers, error) {
	if len(vols) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	vs := &volumeServers{log: log, vols: vols, ctx: ctx, cancel: cancel}
	for _, v := range vols {
		srv, err := fusepipe.NewServer(v.Host, fusepipe.ServerOptions{ReadOnly: v.ReadOnly, Log: log.With("volume", v.Guest)})
		if err != nil {
			vs.Close()
			return nil, fmt.Errorf("volume %s: %w: check that the directory exists", v.Host, err)
		}
		vs.srvs = append(vs.srvs, srv)
	}
	return vs, nil
}

// attach opens one stream per volume on a new session and serves each in
// its own goroutine until the session or the servers end. It reports
// nothing: a broken session shows up in the request that follows, and a
// guest that refuses a volume says why in its answer to start (or, after
// a reset, cannot use it anyway).
func (vs *volumeServers) attach(ctx context.Context, c *channel.Client) {
	if vs == nil {
		return
	}
	for i, v := range vs.vols {
		s, _, err := c.Open(ctx, channel.Request{Kind: channel.KindVolume, Volume: i})
		if err != nil {
			var ge *channel.GuestError
			if errors.As(err, &ge) {
				vs.log.Warn("guest refused volume", "volume", v.Guest, "err", ge.Msg)
				continue
			}
			vs.log.Debug("open volume stream", "volume", v.Guest, "err", err)
			return
		}
		vs.mu.Lock()
		if vs.closed {
			vs.mu.Unlock()
			s.Close()
			return
		}
		vs.wg.Add(1)
		vs.mu.Unlock()
		go func() {
			defer vs.wg.Done()
			if err := vs.srvs[i].ServeConn(vs.ctx, s); err != nil && vs.ctx.Err() == nil {
				vs.log.Debug("volume stream ended", "volume", v.Guest, "err", err)
			}
		}()
	}
}

// Close stops serving and releases the directories. It is idempotent and
// safe on a nil *volumeServers.
func (vs *volumeServers) Close() error {
	if vs == nil {
		return nil
	}
	vs.mu.Lock()
	vs.closed = true
	vs.mu.Unlock()
	vs.cancel()
	vs.wg.Wait()
	var errs []error
	for _, srv := range vs.srvs {
		errs = append(errs, srv.Close()) // idempotent
	}
	return errors.Join(errs...)
}
