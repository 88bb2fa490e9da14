package sandboxapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/fcvm/fcvm/internal/channel"
)

// File operations run in the sandbox's container as /bin/sh scripts
// through engine.Exec: the container's filesystem is the sandbox's, and
// the guest's own tools see it as the caller's commands do. A path is
// always an argument ($1, $2), never script text. The scripts answer
// with exit codes for the cases the API tells apart.
const (
	exitNotFound = 44
	exitIsDir    = 45
	exitNotDir   = 46
	exitExists   = 47
)

// maxPath bounds a path the API accepts (Linux's PATH_MAX).
const maxPath = 4096

// guestPath checks a caller's path and makes it absolute: relative paths
// are the user's home's, as envd's are. It is the guest's path; nothing
// on the host is named by it.
func guestPath(p, user string) (string, error) {
	if p == "" {
		return "", errors.New("path: required")
	}
	if len(p) > maxPath || strings.IndexByte(p, 0) >= 0 || !utf8.ValidString(p) {
		return "", fmt.Errorf("path %q: too long, or not valid UTF-8 without NUL bytes", p)
	}
	if !path.IsAbs(p) {
		home := "/root"
		if user != "" && user != "root" {
			home = "/home/" + user
		}
		p = path.Join(home, p)
	}
	// Clean keeps ".." at the root: no path leaves the container's "/".
	return path.Clean(p), nil
}

// basicUser is the user the SDK names in Authorization: Basic USER:.
func basicUser(r *http.Request) string {
	auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Basic ")
	if !ok {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(auth)
	if err != nil {
		return ""
	}
	user, _, _ := strings.Cut(string(b), ":")
	if user == "root" {
		return ""
	}
	return user
}

// guestSh runs script with args in sb's container, stdin from in (nil:
// none) and stdout to out, and returns its exit code and its stderr.
func (s *Server) guestSh(ctx context.Context, sb *sandbox, user, script string, in io.Reader, out io.Writer, args ...string) (int, string, error) {
	x, err := s.cfg.Engine.Exec(ctx, sb.VMID, channel.ExecRequest{
		Cmd:   append([]string{"/bin/sh", "-c", script, "sh"}, args...),
		User:  user,
		Stdin: in != nil,
	})
	if err != nil {
		return 0, "", err
	}
	defer x.Close()
	stop := context.AfterFunc(ctx, func() { x.Close() })
	defer stop()
	if in != nil {
		x.Stdin(in)
	}
	var stderr limitedBuffer
	code, err := x.Wait(out, &stderr)
	return code, strings.TrimSpace(stderr.b.String()), err
}

// limitedBuffer keeps the first 4 KiB written to it: enough for an error
// message, whatever the guest prints.
type limitedBuffer struct{ b bytes.Buffer }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// lazyWriter sends the response header on the first byte of the body, so
// a file that turns out missing can still get a 404.
type lazyWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.Header().Set("Content-Type", "application/octet-stream")
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}

const readScript = `[ -e "$1" ] || exit 44; [ -d "$1" ] && exit 45; exec cat -- "$1"`

// readFile is GET /files?path=P: the file's bytes.
func (s *Server) readFile(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	user := r.URL.Query().Get("username")
	p, err := guestPath(r.URL.Query().Get("path"), user)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	lw := &lazyWriter{w: w}
	code, stderr, err := s.guestSh(r.Context(), sb, user, readScript, nil, lw, p)
	if lw.started {
		// The status is sent; a failure now can only cut the body short.
		if err != nil || code != 0 {
			panic(http.ErrAbortHandler)
		}
		return
	}
	switch {
	case err != nil:
		writeError(w, http.StatusBadGateway, err.Error())
	case code == exitNotFound:
		writeError(w, http.StatusNotFound, fmt.Sprintf("path %s: no such file", p))
	case code == exitIsDir:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("path %s: is a directory", p))
	case code != 0:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("read %s: %s", p, stderr))
	default:
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	}
}

const writeScript = `d=$(dirname -- "$1") && mkdir -p -- "$d" && [ ! -d "$1" ] || exit 45; exec cat > "$1"`

// fileInfo is envd's HTTP EntryInfo.
type fileInfo struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

// writeFiles is POST /files: multipart parts named by their file names
// (the SDK's default), or one octet-stream body to ?path=. Parent
// directories are made.
func (s *Server) writeFiles(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	q := r.URL.Query()
	user := q.Get("username")
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUpload)
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if r.Header.Get("Content-Encoding") != "" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Encoding: not supported; send the file uncompressed")
		return
	}
	var written []fileInfo
	write := func(target string, data io.Reader) bool {
		p, err := guestPath(target, user)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return false
		}
		code, stderr, err := s.guestSh(r.Context(), sb, user, writeScript, data, io.Discard, p)
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("upload over %d bytes", s.cfg.MaxUpload))
		case err != nil:
			writeError(w, http.StatusBadGateway, err.Error())
		case code == exitIsDir:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("path %s: is a directory", p))
		case code != 0:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("write %s: %s", p, stderr))
		default:
			written = append(written, fileInfo{Name: path.Base(p), Type: "file", Path: p})
			return true
		}
		return false
	}
	switch ct {
	case "multipart/form-data":
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("upload over %d bytes", s.cfg.MaxUpload))
					return
				}
				writeError(w, http.StatusBadRequest, fmt.Sprintf("read multipart body: %v", err))
				return
			}
			// Part.FileName keeps only the base name; the SDK puts the
			// whole target path there.
			_, dp, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
			target := dp["filename"]
			if target == "" {
				target = q.Get("path")
			}
			if !write(target, part) {
				return
			}
		}
	case "application/octet-stream":
		if !write(q.Get("path"), body) {
			return
		}
	default:
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: want multipart/form-data or application/octet-stream", ct))
		return
	}
	if len(written) == 0 {
		writeError(w, http.StatusBadRequest, "no file in the request")
		return
	}
	writeJSON(w, http.StatusOK, written)
}

// entryScript defines entry(), which prints one NUL-terminated
// "TYPE SIZE PATH" record for $1.
const entryScript = `entry() { if [ -L "$1" ]; then t=l; elif [ -d "$1" ]; then t=d; else t=f; fi; s=0; [ "$t" = f ] && s=$(wc -c < "$1"); printf '%s %s %s\0' "$t" "$s" "$1"; }; `

// entryInfo is envd's filesystem.EntryInfo in protobuf JSON.
type entryInfo struct {
	Name string `json:"name"`
	Type int    `json:"type"` // FileType: 1 file, 2 directory, 3 symlink
	Path string `json:"path"`
	Size string `json:"size"` // int64: a string in protobuf JSON
}

func parseEntries(out []byte) ([]entryInfo, error) {
	var es []entryInfo
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		f := strings.SplitN(string(rec), " ", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("parse guest entry %q", rec)
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			return nil, fmt.Errorf("parse guest entry %q: %w", rec, err)
		}
		t := map[string]int{"f": 1, "d": 2, "l": 3}[f[0]]
		es = append(es, entryInfo{Name: path.Base(f[2]), Type: t, Path: f[2], Size: f[1]})
	}
	return es, nil
}

// fsCall runs a filesystem script on the paths of a unary request (then
// extra arguments) and maps its exit codes to Connect errors.
func (s *Server) fsCall(r *http.Request, sb *sandbox, script string, paths []string, extra ...string) ([]entryInfo, *connectError) {
	user := basicUser(r)
	args := make([]string, len(paths))
	for i, p := range paths {
		gp, err := guestPath(p, user)
		if err != nil {
			return nil, cerr(codeInvalidArgument, "%v", err)
		}
		args[i] = gp
	}
	args = append(args, extra...)
	var out limitedOut
	code, stderr, err := s.guestSh(r.Context(), sb, user, entryScript+script, nil, &out, args...)
	switch {
	case err != nil:
		return nil, cerr(codeUnavailable, "%v", err)
	case out.over:
		return nil, cerr(codeInternal, "listing over %d bytes", maxListing)
	case code == exitNotFound:
		return nil, cerr(codeNotFound, "path %s: no such file or directory", args[0])
	case code == exitNotDir:
		return nil, cerr(codeInvalidArgument, "path %s: not a directory", args[0])
	case code == exitExists:
		return nil, cerr(codeAlreadyExists, "path %s: already exists", args[len(paths)-1])
	case code != 0:
		return nil, cerr(codeInternal, "%s", stderr)
	}
	es, perr := parseEntries(out.b.Bytes())
	if perr != nil {
		return nil, cerr(codeInternal, "%v", perr)
	}
	return es, nil
}

// maxListing bounds what one filesystem call may make the server hold.
const maxListing = 16 << 20

type limitedOut struct {
	b    bytes.Buffer
	over bool
}

func (l *limitedOut) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > maxListing {
		l.over = true
		return len(p), nil
	}
	return l.b.Write(p)
}

type pathRequest struct {
	Path  string `json:"path"`
	Depth uint32 `json:"depth,omitempty"`
}

func (s *Server) fsUnary(w http.ResponseWriter, r *http.Request, sb *sandbox, script string, reply func([]entryInfo) any) {
	var req pathRequest
	if e := readUnaryRequest(w, r, &req); e != nil {
		writeUnaryError(w, e)
		return
	}
	es, e := s.fsCall(r, sb, script, []string{req.Path})
	if e != nil {
		writeUnaryError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, reply(es))
}

func firstEntry(es []entryInfo) any {
	if len(es) == 0 {
		return map[string]any{}
	}
	return map[string]any{"entry": es[0]}
}

// fsStat is filesystem.Filesystem/Stat.
func (s *Server) fsStat(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	s.fsUnary(w, r, sb, `[ -e "$1" ] || [ -L "$1" ] || exit 44; entry "$1"`, firstEntry)
}

// maxDepth bounds how deep a listing goes; the listing's size is bounded
// by maxListing too.
const maxDepth = 64

// listScript lists $1 to depth $2: the entries under it, and under its
// subdirectories (not symlinks to directories) to depth $2-1.
const listScript = `[ -e "$1" ] || exit 44; [ -d "$1" ] || exit 46
walk() { for f in "${1%/}"/* "${1%/}"/.*; do case ${f##*/} in .|..) continue;; esac
[ -e "$f" ] || [ -L "$f" ] || continue; entry "$f"
if [ "$2" -gt 1 ] && [ -d "$f" ] && [ ! -L "$f" ]; then walk "$f" $(($2-1)); fi; done; }
walk "$1" "$2"`

// fsListDir is filesystem.Filesystem/ListDir, depth levels deep (1: the
// directory's own entries).
func (s *Server) fsListDir(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req pathRequest
	if e := readUnaryRequest(w, r, &req); e != nil {
		writeUnaryError(w, e)
		return
	}
	if req.Depth > maxDepth {
		writeUnaryError(w, cerr(codeInvalidArgument, "depth %d: at most %d", req.Depth, maxDepth))
		return
	}
	es, e := s.fsCall(r, sb, listScript, []string{req.Path}, strconv.Itoa(int(max(req.Depth, 1))))
	if e != nil {
		writeUnaryError(w, e)
		return
	}
	if es == nil {
		es = []entryInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": es})
}

// fsMakeDir is filesystem.Filesystem/MakeDir, parents included.
func (s *Server) fsMakeDir(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	s.fsUnary(w, r, sb, `[ -e "$1" ] && exit 47; mkdir -p -- "$1" && entry "$1"`, firstEntry)
}

// fsRemove is filesystem.Filesystem/Remove, recursively.
func (s *Server) fsRemove(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	s.fsUnary(w, r, sb, `[ -e "$1" ] || [ -L "$1" ] || exit 44; rm -rf -- "$1"`, func([]entryInfo) any { return struct{}{} })
}

// fsMove is filesystem.Filesystem/Move.
func (s *Server) fsMove(w http.ResponseWriter, r *http.Request, sb *sandbox) {
	var req struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
	}
	if e := readUnaryRequest(w, r, &req); e != nil {
		writeUnaryError(w, e)
		return
	}
	es, e := s.fsCall(r, sb, `[ -e "$1" ] || [ -L "$1" ] || exit 44; mkdir -p -- "$(dirname -- "$2")" && mv -- "$1" "$2" && entry "$2"`, []string{req.Source, req.Destination})
	if e != nil {
		writeUnaryError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, firstEntry(es))
}
