package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/copytar"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// Copying follows podman's cp: SRC/. copies a directory's contents; a
// destination directory that exists receives SRC; one that does not is
// the name of the copy, in a directory that must exist; a file that
// exists is replaced by a file, never by a directory.
//
// What the guest sends is hostile: it is extracted beneath the
// destination with package copytar (no symlink followed out of it, no
// device nodes, no set-ID bits, bounded size and entry count), and files
// are owned by the caller. What the host sends is resolved in the
// container's root in the guest.

// CopyLimits bound what a copy from a VM may write on the host.
var CopyLimits = copytar.DefaultLimits

// CopyFromVM copies src, a path in the container of the running VM
// nameOrID, to dst on the host.
func (e *Engine) CopyFromVM(ctx context.Context, nameOrID, src, dst string) error {
	contents := isContents(src)
	out, info, err := e.copyOut(ctx, nameOrID, src)
	if err != nil {
		return err
	}
	defer out.Close()
	o := copytar.ExtractOptions{Limits: CopyLimits, Skipped: func(name, why string) {
		e.log.Warn("copy: skipped", "path", name, "why", why)
	}}
	if !contents {
		o.Top = path.Base(path.Clean("/" + src))
	}
	var into string
	st, err := os.Stat(dst)
	switch {
	case err == nil && st.IsDir():
		into = dst
	case err == nil && info.Dir:
		return fmt.Errorf("copy to %s: cannot copy a directory onto a file", dst)
	case err == nil:
		into, o.RenameTo = filepath.Dir(dst), filepath.Base(dst)
	case errors.Is(err, os.ErrNotExist):
		if strings.HasSuffix(dst, "/") && !info.Dir {
			return fmt.Errorf("copy to %s: no such directory", dst)
		}
		if pst, err := os.Stat(filepath.Dir(dst)); err != nil || !pst.IsDir() {
			return fmt.Errorf("copy to %s: no such directory %s", dst, filepath.Dir(dst))
		}
		if contents {
			if err := os.Mkdir(dst, 0o755); err != nil {
				return fmt.Errorf("copy to %s: %w", dst, err)
			}
			into = dst
		} else {
			into, o.RenameTo = filepath.Dir(dst), filepath.Base(dst)
		}
	default:
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	d, err := os.Open(into)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	defer d.Close()
	if err := copytar.Extract(out, d, o); err != nil {
		return fmt.Errorf("copy %s:%s to %s: %w", nameOrID, src, dst, err)
	}
	return nil
}

// CopyOutStream writes the tar stream of src, a path in the container of
// the running VM nameOrID, to w (cp NAME:SRC -), up to CopyLimits.MaxBytes
// and a little for the headers.
func (e *Engine) CopyOutStream(ctx context.Context, nameOrID, src string, w io.Writer) error {
	out, _, err := e.copyOut(ctx, nameOrID, src)
	if err != nil {
		return err
	}
	defer out.Close()
	limit := CopyLimits.MaxBytes + CopyLimits.MaxEntries*1024
	n, err := io.Copy(w, io.LimitReader(out, limit+1))
	if err != nil {
		return fmt.Errorf("copy %s:%s: %w", nameOrID, src, err)
	}
	if n > limit {
		return fmt.Errorf("copy %s:%s: %w", nameOrID, src, copytar.ErrTooLarge)
	}
	return nil
}

// CopyToVM copies src on the host into the container of the running VM
// nameOrID as dst.
func (e *Engine) CopyToVM(ctx context.Context, nameOrID, src, dst string) error {
	contents := isContents(src)
	clean := filepath.Clean(src)
	st, err := os.Lstat(clean)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, unwrapPath(err))
	}
	if contents && !st.IsDir() {
		return fmt.Errorf("copy %s: not a directory", src)
	}
	parent, err := os.Open(filepath.Dir(clean))
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer parent.Close()
	base, as := filepath.Base(clean), filepath.Base(clean)
	if contents || clean == "/" {
		as = "."
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(copytar.Write(pw, parent, base, as, func(name, why string) {
			e.log.Warn("copy: skipped", "path", name, "why", why)
		}))
	}()
	err = e.copyIn(ctx, nameOrID, channel.CopyRequest{Path: dst, SrcBase: as, SrcDir: st.IsDir()}, pr)
	pr.Close()
	if err != nil {
		return fmt.Errorf("copy %s to %s:%s: %w", src, nameOrID, dst, err)
	}
	return nil
}

// CopyInStream extracts the tar stream r into dst, a directory in the
// container of the running VM nameOrID (cp - NAME:DST).
func (e *Engine) CopyInStream(ctx context.Context, nameOrID string, r io.Reader, dst string) error {
	if err := e.copyIn(ctx, nameOrID, channel.CopyRequest{Path: dst, Stream: true}, r); err != nil {
		return fmt.Errorf("copy to %s:%s: %w", nameOrID, dst, err)
	}
	return nil
}

func isContents(p string) bool { return strings.HasSuffix(p, "/.") || p == "." }

// unwrapPath drops the path os repeats in its errors.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// copyOut opens the guest's tar stream of src.
func (e *Engine) copyOut(ctx context.Context, nameOrID, src string) (*frameReader, channel.CopyInfo, error) {
	var info channel.CopyInfo
	rec, err := e.Running(nameOrID)
	if err != nil {
		return nil, info, err
	}
	conn, payload, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindCopyOut, Copy: &channel.CopyRequest{Path: src}})
	if err != nil {
		return nil, info, fmt.Errorf("copy %s:%s: %w", nameOrID, src, guestText(err))
	}
	if err := json.Unmarshal(payload, &info); err != nil {
		conn.Close()
		return nil, info, fmt.Errorf("copy %s:%s: the guest's answer: %w", nameOrID, src, err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return &frameReader{conn: conn, stop: stop}, info, nil
}

// copyIn sends the tar stream r to the guest for req and waits for its
// verdict.
func (e *Engine) copyIn(ctx context.Context, nameOrID string, req channel.CopyRequest, r io.Reader) error {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return err
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindCopyIn, Copy: &req})
	if err != nil {
		return guestText(err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go channel.NewStream(conn).PumpStdin(r)
	_, err = io.Copy(io.Discard, &frameReader{conn: conn})
	return err
}

// guestText is the guest's own message for its refusals.
func guestText(err error) error {
	var ge *channel.GuestError
	if errors.As(err, &ge) {
		return ge
	}
	return err
}

// frameReader reads the payloads of FrameStdout frames until FrameExit
// (io.EOF) or FrameError (the guest's error).
type frameReader struct {
	conn net.Conn
	stop func() bool
	buf  []byte
	err  error
}

func (r *frameReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 && r.err == nil {
		f, err := channel.ReadFrame(r.conn)
		switch {
		case err != nil:
			r.err = fmt.Errorf("connection to the VM lost: %w", err)
		case f.Type == channel.FrameStdout:
			r.buf = f.Payload
		case f.Type == channel.FrameExit:
			r.err = io.EOF
		case f.Type == channel.FrameError:
			r.err = &channel.GuestError{Msg: string(f.Payload)}
		}
	}
	if len(r.buf) > 0 {
		n := copy(p, r.buf)
		r.buf = r.buf[n:]
		return n, nil
	}
	return 0, r.err
}

func (r *frameReader) Close() error {
	if r.stop != nil {
		r.stop()
	}
	return r.conn.Close()
}
