package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// HTTP is a probe that GETs URL from the host.
type HTTP struct {
	URL string
	// Client defaults to one that follows no redirects and keeps no
	// connections between checks.
	Client *http.Client
}

var defaultClient = &http.Client{
	// A redirect is an answer: 3xx passes, as with curl -f.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	// Each check is a fresh connection, so a restarted server is seen as
	// it is now, not through a stale keep-alive.
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// Check passes on a 2xx or 3xx answer.
func (p *HTTP) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", p.URL, err)
	}
	req.Header.Set("User-Agent", "fcvm-healthcheck")
	c := p.Client
	if c == nil {
		c = defaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", p.URL, resp.Status)
	}
	return nil
}

// RunFunc runs cmd in the container and returns its exit code and some of
// its output.
type RunFunc func(ctx context.Context, cmd []string) (code int, output []byte, err error)

// Command is a probe that runs Cmd in the container through Run.
type Command struct {
	Cmd []string
	Run RunFunc
}

// Check passes when the command exits 0; a failure carries the end of its
// output, which is where a health command says what is wrong.
func (p *Command) Check(ctx context.Context) error {
	code, out, err := p.Run(ctx, p.Cmd)
	if err != nil {
		return fmt.Errorf("health command: %w", err)
	}
	if code != 0 {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 200 {
			msg = "..." + msg[len(msg)-200:]
		}
		if msg != "" {
			return fmt.Errorf("health command exited %d: %s", code, msg)
		}
		return fmt.Errorf("health command exited %d", code)
	}
	return nil
}

// ParseCommand turns a --health-cmd value into an argument list as podman
// does: a JSON array is the command itself, after an optional leading
// "CMD" (exec form) or "CMD-SHELL" (the rest joined and given to
// /bin/sh -c); any other string runs with /bin/sh -c.
func ParseCommand(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("--health-cmd: empty command")
	}
	if !strings.HasPrefix(s, "[") {
		return []string{"/bin/sh", "-c", s}, nil
	}
	var a []string
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return nil, fmt.Errorf("--health-cmd %s: not a JSON array of strings: %w", s, err)
	}
	if len(a) > 0 {
		switch a[0] {
		case "CMD":
			a = a[1:]
		case "CMD-SHELL":
			if len(a) == 1 {
				return nil, fmt.Errorf("--health-cmd %s: CMD-SHELL without a command", s)
			}
			return []string{"/bin/sh", "-c", strings.Join(a[1:], " ")}, nil
		}
	}
	if len(a) == 0 || a[0] == "" {
		return nil, fmt.Errorf("--health-cmd %s: no command", s)
	}
	return a, nil
}

// GuestHost is the host name in a --health-url that stands for the
// container.
const GuestHost = "guest"

// ParseURL checks a --health-url: http or https, with a host. It reports
// the guest port when the host is [GuestHost] (0 otherwise; the default
// port of the scheme when none is given).
func ParseURL(raw string) (u *url.URL, guestPort int, err error) {
	u, err = url.Parse(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("--health-url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, 0, fmt.Errorf("--health-url %q: must be an http:// or https:// URL, e.g. http://guest:80/health", raw)
	}
	if u.Hostname() == "" {
		return nil, 0, fmt.Errorf("--health-url %q: no host: use guest (the container) or an address on this host, e.g. http://guest:80/", raw)
	}
	if u.Hostname() != GuestHost {
		return u, 0, nil
	}
	p := u.Port()
	if p == "" {
		if u.Scheme == "https" {
			return u, 443, nil
		}
		return u, 80, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return nil, 0, fmt.Errorf("--health-url %q: port %q is not a number from 1 to 65535", raw, p)
	}
	return u, n, nil
}

// GuestURL resolves a --health-url for the host: a URL whose host is
// [GuestHost] gets the address resolve returns for its guest port
// ("IP:PORT", where the host reaches that port of the container); any
// other URL is returned as it is.
func GuestURL(raw string, resolve func(guestPort int) (hostPort string, err error)) (string, error) {
	u, port, err := ParseURL(raw)
	if err != nil {
		return "", err
	}
	if port == 0 {
		return raw, nil
	}
	hp, err := resolve(port)
	if err != nil {
		return "", err
	}
	if _, _, err := net.SplitHostPort(hp); err != nil {
		return "", fmt.Errorf("--health-url %q: guest port %d resolved to %q: %w", raw, port, hp, err)
	}
	u.Host = hp
	return u.String(), nil
}
