package channel

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// readConn is a net.Conn whose reads come from a handshake's buffered
// reader, so bytes read past the Hello are not lost, and, on the host,
// whose writes are escaped (escape.go).
type readConn struct {
	net.Conn
	r io.Reader
	w io.Writer // nil: the Conn's own
}

func (c *readConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *readConn) Write(p []byte) (int, error) {
	if c.w != nil {
		return c.w.Write(p)
	}
	return c.Conn.Write(p)
}

func yamuxConfig(log *slog.Logger) *yamux.Config {
	cfg := yamux.DefaultConfig()
	// A guest that dies or is reset closes the carrier, which ends the
	// session at once; keepalives only catch a wedged guest, so they are
	// lenient: a guest starved of CPU (TCG on a busy host, a snapshot
	// pause) must not lose its session, which would cost it its volumes.
	cfg.KeepAliveInterval = 30 * time.Second
	cfg.ConnectionWriteTimeout = 60 * time.Second
	cfg.StreamOpenTimeout = 15 * time.Second
	cfg.MaxStreamWindowSize = 1 << 20
	cfg.LogOutput = nil
	cfg.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	return cfg
}

// Client is the host's end of one session.
type Client struct {
	sess *yamux.Session
	// GuestGeneration is the generation the guest reported before this
	// session's handshake.
	GuestGeneration uint64
}

// NewClient performs the host handshake on conn and starts a session. It
// owns conn from then on.
func NewClient(conn net.Conn, generation uint64, log *slog.Logger) (*Client, error) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	gen, r, err := HostHandshake(conn, generation)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	sess, err := yamux.Client(&readConn{Conn: conn, r: r, w: &escapeWriter{w: conn}}, yamuxConfig(log))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start session: %w", err)
	}
	return &Client{sess: sess, GuestGeneration: gen}, nil
}

// Open opens a stream for req and waits for the guest to accept it. The
// returned conn carries frames (or fuse-pipe bytes for KindVolume).
func (c *Client) Open(ctx context.Context, req Request) (net.Conn, []byte, error) {
	s, err := c.sess.OpenStream()
	if err != nil {
		return nil, nil, fmt.Errorf("open %s stream: %w", req.Kind, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if err := WriteRequest(s, req); err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("open %s stream: %w", req.Kind, err)
	}
	payload, err := ReadReply(s)
	if err != nil {
		s.Close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("open %s stream: %w", req.Kind, err)
	}
	return s, payload, nil
}

// Done is closed when the session ends.
func (c *Client) Done() <-chan struct{} { return c.sess.CloseChan() }

// Close ends the session and its connection.
func (c *Client) Close() error { return c.sess.Close() }

// Handler serves one stream on the guest. It owns conn.
type Handler func(ctx context.Context, req Request, conn net.Conn)

// Serve runs the guest's end of a session on conn, which has already
// completed GuestHandshake (r is the handshake's reader). It blocks until
// the session ends and closes conn.
func Serve(ctx context.Context, conn net.Conn, r io.Reader, log *slog.Logger, h Handler) error {
	sess, err := yamux.Server(&readConn{Conn: conn, r: r}, yamuxConfig(log))
	if err != nil {
		conn.Close()
		return fmt.Errorf("start session: %w", err)
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	for {
		s, err := sess.AcceptStream()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("accept stream: %w", err)
		}
		go func() {
			req, err := ReadRequest(s)
			if err != nil {
				log.Warn("bad stream request", "err", err)
				s.Close()
				return
			}
			h(ctx, req, s)
		}()
	}
}

// Reply sends the guest's acceptance of a request.
func Reply(w io.Writer, payload []byte) error { return WriteFrame(w, FrameOK, payload) }

// ReplyError refuses a request with a message for the user.
func ReplyError(w io.Writer, err error) error { return WriteFrame(w, FrameError, []byte(err.Error())) }
