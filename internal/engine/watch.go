package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"net"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// Watch is a directory of a VM's container being watched: Next yields its
// changes.
type Watch struct {
	vm   string
	conn net.Conn
}

// Watch starts watching req.Path in the running VM nameOrID. A path that
// is missing or not a directory is refused here.
func (e *Engine) Watch(ctx context.Context, nameOrID string, req channel.WatchRequest) (*Watch, error) {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return nil, err
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindWatch, Watch: &req})
	if err != nil {
		return nil, fmt.Errorf("watch in %s: %w", nameOrID, err)
	}
	return &Watch{vm: nameOrID, conn: conn}, nil
}

// Next returns the next change; ok is false when the watch has ended
// because the directory went.
func (w *Watch) Next() (ev channel.WatchEvent, ok bool, err error) {
	f, err := channel.ReadFrame(w.conn)
	if err != nil {
		return ev, false, fmt.Errorf("watch in %s: connection to the VM lost: %w", w.vm, err)
	}
	switch f.Type {
	case channel.FrameStdout:
		if err := json.Unmarshal(f.Payload, &ev); err != nil {
			return ev, false, fmt.Errorf("watch in %s: decode event: %w", w.vm, err)
		}
		return ev, true, nil
	case channel.FrameExit:
		return ev, false, nil
	case channel.FrameError:
		return ev, false, fmt.Errorf("watch in %s: %w", w.vm, &channel.GuestError{Msg: string(f.Payload)})
	default:
		return ev, false, fmt.Errorf("watch in %s: unexpected frame type %d", w.vm, f.Type)
	}
}

// Close ends the watch.
func (w *Watch) Close() error { return w.conn.Close() }
