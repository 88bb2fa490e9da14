package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// Client speaks the Firecracker API over its Unix socket. It is safe for
// concurrent use, though Firecracker itself handles one request at a time.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the API socket at path. Nothing is dialled
// until the first request.
func NewClient(socket string) *Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:       1,
		DisableCompression: true,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Do sends r and decodes a 200 response into out (which may be nil). A
// response outside 2xx becomes an *APIError.
func (c *Client) Do(ctx context.Context, r Request, out any) error {
	body, err := r.JSON()
	if err != nil {
		return fmt.Errorf("%s: encode: %w", r, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	// The host part is ignored by the dialer; "localhost" is what the spec
	// names.
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://localhost"+r.Path, rd)
	if err != nil {
		return fmt.Errorf("%s: %w", r, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", r, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s: read response: %w", r, err)
	}
	if resp.StatusCode/100 != 2 {
		return newAPIError(r, resp.StatusCode, data)
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decode response: %w", r, err)
	}
	return nil
}

// APIError is a request Firecracker refused.
type APIError struct {
	Method, Path string
	StatusCode   int
	// FaultMessage is Firecracker's own explanation; it is the body as
	// text when the body was not the documented error object.
	FaultMessage string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("firecracker %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode,
		http.StatusText(e.StatusCode), e.FaultMessage)
}

func newAPIError(r Request, status int, body []byte) *APIError {
	e := &APIError{Method: r.Method, Path: r.Path, StatusCode: status}
	var b apiError
	if json.Unmarshal(body, &b) == nil && b.FaultMessage != "" {
		e.FaultMessage = b.FaultMessage
	} else {
		e.FaultMessage = strings.TrimSpace(string(body))
	}
	return e
}
