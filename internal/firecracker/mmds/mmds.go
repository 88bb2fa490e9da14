// Package mmds reads Firecracker's microVM metadata service from inside
// the guest, with the version 2 session tokens fcvm configures. It is for
// fc-agent and imports nothing but the standard library, so the agent
// stays free of the VMM drivers.
//
// MMDS answers on a link-local address (DefaultAddr) reached through the
// guest's network interface: the interface must be up, with a route to
// that address, before Fetch can work. Version 2 wants a token first (PUT
// TokenPath with a TTL header), then each GET carries it.
//
// # Errors
//
// A 404 means the data store is still empty, which happens when the VM
// was started from a config file and the host has not yet put the boot
// plan: ErrNotFound lets the caller retry.
package mmds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

const (
	// DefaultAddr is Firecracker's default MMDS address.
	DefaultAddr = "169.254.169.254"
	// TokenPath is where a v2 session token is requested.
	TokenPath = "/latest/api/token"
	// TokenTTLHeader carries the token's lifetime in seconds (1 to 21600).
	TokenTTLHeader = "X-metadata-token-ttl-seconds"
	// TokenHeader carries the token on each request.
	TokenHeader = "X-metadata-token"
)

// ErrNotFound is returned when the data store (or the path) is empty.
var ErrNotFound = errors.New("mmds: not found")

// Fetch reads path ("/" for the whole store) as JSON from the MMDS at
// addr ("host" or "host:port"), taking a fresh token.
func Fetch(ctx context.Context, c *http.Client, addr, path string) ([]byte, error) {
	base := "http://" + addr
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+TokenPath, nil)
	if err != nil {
		return nil, fmt.Errorf("mmds token: %w", err)
	}
	req.Header.Set(TokenTTLHeader, strconv.Itoa(60))
	token, err := do(c, req)
	if err != nil {
		return nil, fmt.Errorf("mmds token: %w", err)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("mmds get %s: %w", path, err)
	}
	req.Header.Set(TokenHeader, string(token))
	req.Header.Set("Accept", "application/json")
	data, err := do(c, req)
	if err != nil {
		return nil, fmt.Errorf("mmds get %s: %w", path, err)
	}
	return data, nil
}

func do(c *http.Client, req *http.Request) ([]byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, ErrNotFound
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: %s", resp.Status, data)
	}
	return data, nil
}
