package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/copytar"
)

// fcvm cp in the guest: paths are the container's, resolved beneath its
// root (RESOLVE_IN_ROOT on /proc/PID/root), so neither ".." nor a symlink
// in the container reaches the guest's own files.

// copyOut answers KindCopyOut: the tar stream of req.Path.
func (a *Agent) copyOut(req *channel.CopyRequest, conn net.Conn) error {
	root, err := a.copyRoot(req)
	if err != nil {
		return err
	}
	defer root.Close()
	// SRC/. is the contents of SRC: the stream's names start at ".".
	contents := strings.HasSuffix(req.Path, "/.") || req.Path == "."
	p := path.Clean("/" + req.Path)
	dir, base := path.Dir(p), path.Base(p)
	if p == "/" {
		dir, base = "/", "."
	}
	parent, err := inRoot(root, dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("copy %s: %w", req.Path, err)
	}
	defer parent.Close()
	var st unix.Stat_t
	if err := unix.Fstatat(int(parent.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("copy %s: %w", req.Path, err)
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if contents && !isDir {
		return fmt.Errorf("copy %s: not a directory", req.Path)
	}
	info, _ := json.Marshal(channel.CopyInfo{Dir: isDir})
	if err := channel.Reply(conn, info); err != nil {
		return nil
	}
	as := base
	if contents || p == "/" {
		as = "."
	}
	w := &frameWriter{conn: conn}
	if err := copytar.Write(w, parent, base, as, func(name, why string) { a.log.Info("copy: skipped", "path", name, "why", why) }); err != nil {
		return channel.WriteFrame(conn, channel.FrameError, []byte(err.Error()))
	}
	return channel.WriteFrame(conn, channel.FrameExit, channel.Uint32(0))
}

// copyRoot checks a copy request and opens the root its paths resolve in.
func (a *Agent) copyRoot(req *channel.CopyRequest) (*os.File, error) {
	if req == nil || req.Path == "" {
		return nil, errors.New("copy: no path")
	}
	if _, err := a.container(); err != nil {
		return nil, err
	}
	return containerRoot()
}

// frameWriter sends what is written as FrameStdout frames.
type frameWriter struct{ conn net.Conn }

func (w *frameWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); {
		n := min(len(p)-off, 64<<10)
		if err := channel.WriteFrame(w.conn, channel.FrameStdout, p[off:off+n]); err != nil {
			return off, err
		}
		off += n
	}
	return len(p), nil
}

// copyIn answers KindCopyIn: where the host's tar stream goes follows
// podman's cp. A directory that exists receives SRC (or its contents);
// a path that does not names the copy, in a directory that must exist;
// a file that exists is replaced by a file.
func (a *Agent) copyIn(req *channel.CopyRequest, conn net.Conn) error {
	root, err := a.copyRoot(req)
	if err != nil {
		return err
	}
	defer root.Close()
	o := copytar.ExtractOptions{Resolve: unix.RESOLVE_IN_ROOT, KeepSetuid: true, Owner: &copytar.Owner{UID: 0, GID: 0},
		Skipped: func(name, why string) { a.log.Info("copy: skipped", "path", name, "why", why) }}
	if !req.Stream && req.SrcBase != "." {
		o.Top = req.SrcBase
	}
	p := path.Clean("/" + req.Path)
	dest, err := inRoot(root, p, unix.O_PATH|unix.O_DIRECTORY)
	switch {
	case err == nil:
		// An existing directory receives the stream.
	case req.Stream:
		return fmt.Errorf("copy to %s: %w: the destination of a tar stream must be a directory", req.Path, err)
	case errors.Is(err, unix.ENOTDIR) && req.SrcDir:
		return fmt.Errorf("copy to %s: cannot copy a directory onto a file", req.Path)
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ENOENT):
		if errors.Is(err, unix.ENOENT) && strings.HasSuffix(req.Path, "/") && !req.SrcDir {
			return fmt.Errorf("copy to %s: no such directory", req.Path)
		}
		parent, perr := inRoot(root, path.Dir(p), unix.O_PATH|unix.O_DIRECTORY)
		if perr != nil {
			return fmt.Errorf("copy to %s: %w", req.Path, perr)
		}
		if req.SrcBase == "." {
			// SRC/. to a new directory: make it, then fill it.
			if err := unix.Mkdirat(int(parent.Fd()), path.Base(p), 0o755); err != nil {
				parent.Close()
				return fmt.Errorf("copy to %s: %w", req.Path, err)
			}
			parent.Close()
			if dest, err = inRoot(root, p, unix.O_PATH|unix.O_DIRECTORY); err != nil {
				return fmt.Errorf("copy to %s: %w", req.Path, err)
			}
		} else {
			dest, o.RenameTo = parent, path.Base(p)
		}
	default:
		return fmt.Errorf("copy to %s: %w", req.Path, err)
	}
	defer dest.Close()
	if err := channel.Reply(conn, nil); err != nil {
		return nil
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(readStdin(conn, pw)) }()
	err = copytar.Extract(pr, dest, o)
	pr.CloseWithError(errors.New("copy ended"))
	if err != nil {
		return channel.WriteFrame(conn, channel.FrameError, []byte(err.Error()))
	}
	return channel.WriteFrame(conn, channel.FrameExit, channel.Uint32(0))
}

// readStdin copies FrameStdin payloads to w until FrameStdinEOF.
func readStdin(conn net.Conn, w io.Writer) error {
	for {
		f, err := channel.ReadFrame(conn)
		if err != nil {
			return err
		}
		switch f.Type {
		case channel.FrameStdin:
			if _, err := w.Write(f.Payload); err != nil {
				return err
			}
		case channel.FrameStdinEOF:
			return nil
		}
	}
}
