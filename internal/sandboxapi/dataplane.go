package sandboxapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serveData is the data plane of sandbox id: envd on EnvdPort, the
// sandbox's published ports on the others.
func (s *Server) serveData(w http.ResponseWriter, r *http.Request, id, port string) {
	sb := s.lookup(id)
	if sb == nil {
		// What E2B's proxy answers for a sandbox it does not know; the
		// SDK's health check reads 502 as "not running".
		writeError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %q not found", id))
		return
	}
	if sb.Paused {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("sandbox %s is paused: resume it with connect", id))
		return
	}
	if port != EnvdPort {
		s.servePort(w, r, sb, port)
		return
	}
	tok := r.Header.Get("X-Access-Token")
	signed := tok == "" && r.URL.Path == "/files" && r.URL.Query().Has("signature")
	if signed {
		if err := checkSignature(r, sb.Token, time.Now()); err != nil {
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
	} else if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(sb.Token)) != 1 {
		writeError(w, http.StatusUnauthorized, "invalid or missing access token (X-Access-Token)")
		return
	}
	if r.URL.Path == "/health" && r.Method == http.MethodGet {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.URL.Path == "/files" {
		switch r.Method {
		case http.MethodGet:
			s.readFile(w, r, sb)
		case http.MethodPost:
			s.writeFiles(w, r, sb)
		default:
			writeError(w, http.StatusMethodNotAllowed, r.Method+" /files: use GET or POST")
		}
		return
	}
	if r.Method != http.MethodPost {
		writeUnaryError(w, cerr(codeNotFound, "%s %s: no such method", r.Method, r.URL.Path))
		return
	}
	handler := map[string]func(http.ResponseWriter, *http.Request, *sandbox){
		"/process.Process/Start":                  s.processStart,
		"/process.Process/Connect":                s.processConnect,
		"/process.Process/Update":                 s.processUpdate,
		"/process.Process/SendSignal":             s.processSendSignal,
		"/process.Process/SendInput":              s.processSendInput,
		"/process.Process/CloseStdin":             s.processCloseStdin,
		"/process.Process/List":                   s.processList,
		"/filesystem.Filesystem/Stat":             s.fsStat,
		"/filesystem.Filesystem/ListDir":          s.fsListDir,
		"/filesystem.Filesystem/MakeDir":          s.fsMakeDir,
		"/filesystem.Filesystem/Remove":           s.fsRemove,
		"/filesystem.Filesystem/Move":             s.fsMove,
		"/filesystem.Filesystem/WatchDir":         s.fsWatchDir,
		"/filesystem.Filesystem/CreateWatcher":    s.fsCreateWatcher,
		"/filesystem.Filesystem/GetWatcherEvents": s.fsGetWatcherEvents,
		"/filesystem.Filesystem/RemoveWatcher":    s.fsRemoveWatcher,
	}[r.URL.Path]
	if handler == nil {
		writeUnaryError(w, cerr(codeUnimplemented, "%s: not implemented by fcvm serve", strings.TrimPrefix(r.URL.Path, "/")))
		return
	}
	handler(w, r, sb)
}

// checkSignature checks the signature of a presigned /files URL (the
// SDK's uploadUrl and downloadUrl): "v1_" and the unpadded base64 of the
// SHA-256 of PATH:OPERATION:USER:TOKEN[:EXPIRATION], where the operation
// is read for GET and write for POST, and an expiration, if signed in,
// is a Unix time not yet past.
func checkSignature(r *http.Request, token string, now time.Time) error {
	q := r.URL.Query()
	op := "read"
	if r.Method == http.MethodPost {
		op = "write"
	}
	raw := q.Get("path") + ":" + op + ":" + q.Get("username") + ":" + token
	if exp := q.Get("signature_expiration"); exp != "" {
		n, err := strconv.ParseInt(exp, 10, 64)
		if err != nil {
			return fmt.Errorf("signature_expiration %q: not a Unix time", exp)
		}
		if now.Unix() > n {
			return errors.New("signature expired: ask for a new URL")
		}
		raw += ":" + exp
	}
	sum := sha256.Sum256([]byte(raw))
	want := "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(q.Get("signature")), []byte(want)) != 1 {
		return errors.New("invalid signature for this path, operation and user")
	}
	return nil
}
