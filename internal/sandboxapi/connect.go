package sandboxapi

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// The Connect protocol, JSON codec only, as the E2B SDK speaks it
// (connectrpc.com/docs/protocol). A unary call is a POST of
// application/json answered by JSON, or on error by an HTTP status and
// {"code":"not_found","message":...}. A server stream is a POST of
// application/connect+json whose body is one envelope, answered with 200
// and envelopes: [flags u8][length u32 BE][JSON message], the last with
// flagEndStream and {"error":{...}} or {}.

const (
	flagCompressed = 0x01
	flagEndStream  = 0x02
)

// Connect error codes, and the HTTP status a unary error carries.
const (
	codeInvalidArgument   = "invalid_argument"
	codeNotFound          = "not_found"
	codeAlreadyExists     = "already_exists"
	codeDeadlineExceeded  = "deadline_exceeded"
	codeUnimplemented     = "unimplemented"
	codeInternal          = "internal"
	codeUnavailable       = "unavailable"
	codeFailedPrecond     = "failed_precondition"
	codeResourceExhausted = "resource_exhausted"
)

var codeStatus = map[string]int{
	codeInvalidArgument:   http.StatusBadRequest,
	codeNotFound:          http.StatusNotFound,
	codeAlreadyExists:     http.StatusConflict,
	codeDeadlineExceeded:  http.StatusGatewayTimeout,
	codeUnimplemented:     http.StatusNotImplemented,
	codeInternal:          http.StatusInternalServerError,
	codeUnavailable:       http.StatusServiceUnavailable,
	codeFailedPrecond:     http.StatusBadRequest,
	codeResourceExhausted: http.StatusTooManyRequests,
}

// connectError is a Connect error: a code and a message.
type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

func (e *connectError) Error() string { return e.Code + ": " + e.Message }

func cerr(code, format string, args ...any) *connectError {
	return &connectError{Code: code, Message: oneLine(fmt.Sprintf(format, args...))}
}

// writeUnaryError answers a unary call with e.
func writeUnaryError(w http.ResponseWriter, e *connectError) {
	status, ok := codeStatus[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, e)
}

// writeStreamError answers a server-stream call with e alone: HTTP 200
// and an end-stream envelope, which is where a Connect client reads a
// stream's error.
func writeStreamError(w http.ResponseWriter, e *connectError) {
	newStream(w).end(e)
}

// readEnvelope reads one envelope of at most max bytes of message.
func readEnvelope(r io.Reader, max uint32) (flags byte, msg []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, fmt.Errorf("read envelope: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > max {
		return 0, nil, fmt.Errorf("read envelope: message of %d bytes, over the limit of %d", n, max)
	}
	msg = make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, nil, fmt.Errorf("read envelope: %w", err)
	}
	return hdr[0], msg, nil
}

// appendEnvelope appends msg as an envelope with flags to b.
func appendEnvelope(b []byte, flags byte, msg []byte) []byte {
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	return append(b, msg...)
}

// readStreamRequest decodes the one request message of a server stream
// into v.
func readStreamRequest(r *http.Request, v any) *connectError {
	if ct := r.Header.Get("Content-Type"); ct != "application/connect+json" {
		return cerr(codeInvalidArgument, "content type %q: want application/connect+json", ct)
	}
	flags, msg, err := readEnvelope(r.Body, MaxJSONBody)
	if err != nil {
		return cerr(codeInvalidArgument, "%v", err)
	}
	if flags&flagCompressed != 0 {
		return cerr(codeUnimplemented, "compressed messages are not supported")
	}
	if err := json.Unmarshal(msg, v); err != nil {
		return cerr(codeInvalidArgument, "decode request: %v", err)
	}
	return nil
}

// readUnaryRequest decodes a unary call's JSON body into v.
func readUnaryRequest(w http.ResponseWriter, r *http.Request, v any) *connectError {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return cerr(codeInvalidArgument, "content type %q: want application/json", ct)
	}
	if err := decodeJSON(w, r, v); err != nil {
		return cerr(codeInvalidArgument, "%v", err)
	}
	return nil
}

// stream writes a server stream's messages. Its methods are safe for
// concurrent use: output and keepalives come from different goroutines.
type stream struct {
	mu   sync.Mutex // guards w and done
	w    http.ResponseWriter
	rc   *http.ResponseController
	done bool
}

func newStream(w http.ResponseWriter) *stream {
	w.Header().Set("Content-Type", "application/connect+json")
	w.WriteHeader(http.StatusOK)
	return &stream{w: w, rc: http.NewResponseController(w)}
}

// send writes v as one message and flushes it to the client.
func (s *stream) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	return s.write(0, b)
}

// end closes the stream, with e as its error if not nil.
func (s *stream) end(e *connectError) error {
	body := []byte("{}")
	if e != nil {
		body, _ = json.Marshal(struct {
			Error *connectError `json:"error"`
		}{e})
	}
	err := s.write(flagEndStream, body)
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	return err
}

// close makes later sends fail; it waits for a send under way.
func (s *stream) close() {
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
}

func (s *stream) write(flags byte, msg []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return fmt.Errorf("write message: stream ended")
	}
	if _, err := s.w.Write(appendEnvelope(nil, flags, msg)); err != nil {
		return fmt.Errorf("write message: %w", err)
	}
	return s.rc.Flush()
}
