package agent

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/fusepipe"
)

// Volumes: the host opens one KindVolume stream per -v directory as soon
// as a session starts, before it sends start. The agent mounts stream i
// with fuse-pipe at volumeRoot/i, and the container's spec binds that
// directory to the container's path (containerSpec). start waits until every volume of its
// plan is mounted, so the container never sees an empty directory.
//
// A fuse-pipe mount is tied to its stream: the host's node IDs belong to
// that connection. So volumes do not survive a channel reset (a snapshot
// restore, a broken connection): the old mount fails with EIO, and a new
// stream for it is refused once the container uses it. Before the
// container starts, a new stream replaces a dead mount.

const (
	// maxVolumes bounds the volume index a host may name.
	maxVolumes = 256
	// volumeWait bounds how long start waits for the host's volume
	// streams. They are opened before start on the same session, so only
	// a broken host makes this wait at all.
	volumeWait = 30 * time.Second
)

// volumeRoot holds the volumes' mount points in the VM; containerSpec
// names the same directory.
const volumeRoot = "/mnt/volumes"

// dir is where volume i is mounted.
func (v *guestVolumes) dir(i int) string {
	root := v.root
	if root == "" {
		root = volumeRoot
	}
	return fmt.Sprintf("%s/%d", root, i)
}

// guestVolumes are the volumes mounted from the host. Its zero value is
// ready to use.
type guestVolumes struct {
	// root replaces volumeRoot in tests, which run on the host.
	root string

	mu sync.Mutex // guards the fields below
	m  map[int]*guestVolume
	// inUse is set once start has handed the mounts to crun: from then
	// on a mount is never replaced under the container.
	inUse bool
	// changed is closed (and replaced) whenever a volume is mounted or
	// fails, waking wait.
	changed chan struct{}
}

// guestVolume is one volume: mounting, mounted (client) or failed (err).
type guestVolume struct {
	mounting bool
	client   *fusepipe.Client
	err      error
}

// volume serves a KindVolume stream: it accepts it, then mounts it. The
// mount owns conn.
func (a *Agent) volume(i int, conn net.Conn) {
	if err := a.vols.begin(i); err != nil {
		a.log.Warn("refuse volume", "volume", i, "err", err)
		channel.ReplyError(conn, err)
		conn.Close()
		return
	}
	dir := a.vols.dir(i)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		err = fmt.Errorf("make mount point: %w", err)
		channel.ReplyError(conn, err)
		conn.Close()
		a.vols.done(i, nil, err)
		return
	}
	// Accept before mounting: fuse-pipe's own hello follows on the stream,
	// and the host only starts serving once it has the acceptance.
	if err := channel.Reply(conn, nil); err != nil {
		conn.Close()
		a.vols.done(i, nil, fmt.Errorf("accept volume stream: %w", err))
		return
	}
	c, err := fusepipe.Mount(conn, dir, fusepipe.MountOptions{
		Log:  a.log.With("volume", i),
		Name: fmt.Sprintf("fcvm-volume-%d", i),
		// The host closing the stream gives EIO at once; the silence
		// timeout only catches a wedged host, and a guest starved of CPU
		// (TCG on a busy host) must not take its own slowness for one.
		Timeout: time.Minute,
	})
	if err == nil {
		a.log.Info("volume mounted", "volume", i, "dir", dir)
	}
	a.vols.done(i, c, err)
}

// remountWait bounds how long a new stream for a volume waits for an
// earlier one that is still mounting.
const remountWait = 30 * time.Second

// begin claims volume i for a new stream, unmounting a dead mount the
// container does not use yet.
func (v *guestVolumes) begin(i int) error {
	if i < 0 || i >= maxVolumes {
		return fmt.Errorf("volume %d: index out of range", i)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[int]*guestVolume{}
	}
	// A stream from before a channel reset may still be mounting (its
	// connection is gone, so it is about to fail): wait for it to end,
	// then replace it as any earlier mount.
	deadline := time.NewTimer(remountWait)
	defer deadline.Stop()
	for v.m[i] != nil && v.m[i].mounting {
		if v.changed == nil {
			v.changed = make(chan struct{})
		}
		changed := v.changed
		v.mu.Unlock()
		select {
		case <-changed:
			v.mu.Lock()
		case <-deadline.C:
			v.mu.Lock()
			return fmt.Errorf("volume %d: already being mounted", i)
		}
	}
	old := v.m[i]
	switch {
	case old == nil || old.err != nil:
	case v.inUse:
		return fmt.Errorf("volume %d is mounted from an earlier connection and volumes do not survive a channel reset (snapshot restore or broken connection): the container gets EIO under it; run a new VM to share the directory again", i)
	default:
		// A reset before the container started: nothing holds the old
		// mount, so replace it.
		if err := old.client.Unmount(); err != nil {
			return fmt.Errorf("volume %d: replace earlier mount: %w", i, err)
		}
	}
	v.m[i] = &guestVolume{mounting: true}
	return nil
}

// done records how mounting volume i ended.
func (v *guestVolumes) done(i int, c *fusepipe.Client, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.m[i] = &guestVolume{client: c, err: err}
	if v.changed != nil {
		close(v.changed)
		v.changed = nil
	}
}

// wait blocks until every volume of plan is mounted, one failed, or
// timeout passes. On success the mounts are in use and stay as they are.
func (v *guestVolumes) wait(plan []channel.VolumePlan, timeout time.Duration) error {
	if len(plan) == 0 {
		return nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		v.mu.Lock()
		pending := -1
		for i, p := range plan {
			gv := v.m[i]
			switch {
			case gv == nil || gv.mounting:
				if pending < 0 {
					pending = i
				}
			case gv.err != nil:
				v.mu.Unlock()
				return fmt.Errorf("volume %s: %w", p.Guest, gv.err)
			}
		}
		if pending < 0 {
			v.inUse = true
			v.mu.Unlock()
			return nil
		}
		if v.changed == nil {
			v.changed = make(chan struct{})
		}
		changed := v.changed
		v.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return fmt.Errorf("volume %s: not mounted within %s: the host did not share it (see the supervisor's log)", plan[pending].Guest, timeout)
		}
	}
}

// mountVolumes makes sure the plan's volumes are mounted before crun
// runs; the host has already opened their streams.
func (a *Agent) mountVolumes(plan []channel.VolumePlan) error {
	return a.vols.wait(plan, volumeWait)
}
