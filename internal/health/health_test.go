package health

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type tlog struct{ t testing.TB }

func (w tlog) Write(b []byte) (int, error) { w.t.Log(strings.TrimSpace(string(b))); return len(b), nil }

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func fast() Config {
	return Config{Interval: 10 * time.Millisecond, Timeout: time.Second, Retries: 3}
}

// server answers with the status codes of codes in turn, then the last one
// forever, and counts requests.
func server(t *testing.T, codes ...int) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		w.WriteHeader(codes[min(i, len(codes)-1)])
	}))
	t.Cleanup(s.Close)
	return s, &n
}

// run starts c in the background and stops it at the end of the test.
func run(t *testing.T, c *Checker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
}

// changes records the statuses OnChange reports.
type changes struct {
	mu sync.Mutex
	s  []string
}

func (c *changes) add(r Result) { c.mu.Lock(); c.s = append(c.s, r.Status); c.mu.Unlock() }
func (c *changes) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.s...)
}

func wait(t *testing.T, c *Checker) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.WaitDecided(ctx)
}

func TestHTTPHealthy(t *testing.T) {
	for _, code := range []int{200, 204, 302} {
		s, _ := server(t, code)
		var ch changes
		c := &Checker{Probe: &HTTP{URL: s.URL + "/health"}, Config: fast(), OnChange: ch.add, Log: testLog(t)}
		run(t, c)
		r, err := wait(t, c)
		if err != nil || r.Status != Healthy {
			t.Fatalf("code %d: %+v, %v", code, r, err)
		}
		if diff := cmp.Diff([]string{Starting, Healthy}, ch.get()); diff != "" {
			t.Errorf("code %d: changes (-want +got):\n%s", code, diff)
		}
	}
}

func TestHTTPUnhealthyAfterRetries(t *testing.T) {
	s, n := server(t, 500)
	c := &Checker{Probe: &HTTP{URL: s.URL}, Config: fast(), Log: testLog(t)}
	run(t, c)
	r, err := wait(t, c)
	if err != nil || r.Status != Unhealthy {
		t.Fatalf("got %+v, %v; want unhealthy", r, err)
	}
	if r.Checks != 3 || r.Failures != 3 || n.Load() < 3 {
		t.Errorf("unhealthy after %d checks (%d failures, %d requests), want 3", r.Checks, r.Failures, n.Load())
	}
	if r.Err == nil || !strings.Contains(r.Err.Error(), "500") {
		t.Errorf("last error %v does not name the status", r.Err)
	}
}

func TestRecoversAndRelapses(t *testing.T) {
	// fail twice (below retries), pass, fail three times, pass.
	s, _ := server(t, 500, 500, 200, 503, 503, 503, 200)
	var ch changes
	c := &Checker{Probe: &HTTP{URL: s.URL}, Config: fast(), OnChange: ch.add, Log: testLog(t)}
	run(t, c)
	deadline := time.Now().Add(10 * time.Second)
	want := []string{Starting, Healthy, Unhealthy, Healthy}
	for len(ch.get()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if diff := cmp.Diff(want, ch.get()); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

func TestStartPeriodFailuresDoNotCount(t *testing.T) {
	s, n := server(t, 500)
	cfg := fast()
	cfg.StartPeriod = 300 * time.Millisecond
	c := &Checker{Probe: &HTTP{URL: s.URL}, Config: cfg, Log: testLog(t)}
	t0 := time.Now()
	run(t, c)
	r, err := wait(t, c)
	if err != nil || r.Status != Unhealthy {
		t.Fatalf("got %+v, %v", r, err)
	}
	if el := time.Since(t0); el < cfg.StartPeriod {
		t.Errorf("unhealthy after %s, inside the start period %s", el, cfg.StartPeriod)
	}
	if n.Load() <= 3 {
		t.Errorf("%d requests: the start period's failures were counted", n.Load())
	}
}

func TestStartPeriodEndsOnSuccess(t *testing.T) {
	s, _ := server(t, 500, 200)
	cfg := fast()
	cfg.StartPeriod = time.Hour
	c := &Checker{Probe: &HTTP{URL: s.URL}, Config: cfg, Log: testLog(t)}
	run(t, c)
	if r, err := wait(t, c); err != nil || r.Status != Healthy {
		t.Fatalf("got %+v, %v", r, err)
	}
}

func TestTimeout(t *testing.T) {
	block := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(block); s.Close() })
	cfg := fast()
	cfg.Timeout, cfg.Retries = 50*time.Millisecond, 1
	c := &Checker{Probe: &HTTP{URL: s.URL}, Config: cfg, Log: testLog(t)}
	run(t, c)
	r, err := wait(t, c)
	if err != nil || r.Status != Unhealthy || r.Err == nil || !strings.Contains(r.Err.Error(), "timed out after 50ms") {
		t.Fatalf("got %+v, %v; want unhealthy by timeout", r, err)
	}
}

func TestRefusedConnectionFails(t *testing.T) {
	s, _ := server(t, 200)
	url := s.URL
	s.Close()
	cfg := fast()
	cfg.Retries = 1
	c := &Checker{Probe: &HTTP{URL: url}, Config: cfg, Log: testLog(t)}
	run(t, c)
	if r, err := wait(t, c); err != nil || r.Status != Unhealthy {
		t.Fatalf("got %+v, %v", r, err)
	}
}

func TestWaitDecidedStopped(t *testing.T) {
	s, _ := server(t, 500)
	cfg := fast()
	cfg.StartPeriod = time.Hour
	c := &Checker{Probe: &HTTP{URL: s.URL}, Config: cfg, Log: testLog(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	time.AfterFunc(50*time.Millisecond, cancel)
	r, err := wait(t, c)
	if !errors.Is(err, ErrStopped) || r.Status != Starting {
		t.Errorf("got %+v, %v; want starting, ErrStopped", r, err)
	}
	<-done
}

func TestCommandProbe(t *testing.T) {
	var got []string
	code := 0
	p := &Command{Cmd: []string{"/bin/sh", "-c", "test -f /ready"}, Run: func(ctx context.Context, cmd []string) (int, []byte, error) {
		got = cmd
		return code, []byte("no /ready yet\n"), nil
	}}
	if err := p.Check(context.Background()); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	if diff := cmp.Diff(p.Cmd, got); diff != "" {
		t.Errorf("command (-want +got):\n%s", diff)
	}
	code = 1
	if err := p.Check(context.Background()); err == nil || err.Error() != "health command exited 1: no /ready yet" {
		t.Errorf("exit 1: %v", err)
	}
	p.Run = func(context.Context, []string) (int, []byte, error) { return 0, nil, errors.New("channel closed") }
	if err := p.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "channel closed") {
		t.Errorf("run error: %v", err)
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "curl -f http://localhost/ || exit 1", want: []string{"/bin/sh", "-c", "curl -f http://localhost/ || exit 1"}},
		{in: `["CMD", "test", "-f", "/ready"]`, want: []string{"test", "-f", "/ready"}},
		{in: `["test", "-f", "/ready"]`, want: []string{"test", "-f", "/ready"}},
		{in: `["CMD-SHELL", "test -f /ready"]`, want: []string{"/bin/sh", "-c", "test -f /ready"}},
		{in: "", err: "empty command"},
		{in: `["CMD"]`, err: "no command"},
		{in: `["CMD-SHELL"]`, err: "CMD-SHELL without a command"},
		{in: `[1, 2]`, err: "not a JSON array of strings"},
	} {
		got, err := ParseCommand(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseCommand(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseCommand(%q): %v", tc.in, err)
		} else if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseCommand(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestGuestURL(t *testing.T) {
	resolve := func(p int) (string, error) {
		if p == 81 {
			return "", errors.New("guest port 81 is not published")
		}
		return "10.66.0.2:" + strconv.Itoa(p), nil
	}
	for _, tc := range []struct{ in, want, err string }{
		{in: "http://guest/health", want: "http://10.66.0.2:80/health"},
		{in: "https://guest/", want: "https://10.66.0.2:443/"},
		{in: "http://guest:8080/x?y=1", want: "http://10.66.0.2:8080/x?y=1"},
		{in: "http://127.0.0.1:18080/", want: "http://127.0.0.1:18080/"},
		{in: "http://guest:81/", err: "not published"},
		{in: "ftp://guest/", err: "must be an http:// or https:// URL"},
		{in: "/health", err: "must be an http"},
		{in: "http:///x", err: "no host"},
		{in: "http://guest:0/", err: "port"},
		{in: "http://guest:99999/", err: "port"},
	} {
		got, err := GuestURL(tc.in, resolve)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("GuestURL(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("GuestURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Interval: DefaultInterval, Timeout: DefaultTimeout, Retries: DefaultRetries}
	if err := ok.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, tc := range []struct {
		mod  func(*Config)
		flag string
	}{
		{func(c *Config) { c.Interval = 0 }, "--health-interval"},
		{func(c *Config) { c.Timeout = -1 }, "--health-timeout"},
		{func(c *Config) { c.StartPeriod = -1 }, "--health-start-period"},
		{func(c *Config) { c.Retries = 0 }, "--health-retries"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.flag) {
			t.Errorf("%+v: %v, want an error naming %s", c, err, tc.flag)
		}
	}
}

// A waiter woken by a decision sees what OnChange recorded of it: the
// supervisor stores the health there, and `run --wait-healthy` followed by
// `ls` must agree.
func TestOnChangeBeforeWaiters(t *testing.T) {
	s, _ := server(t, 500)
	var stored atomic.Value
	c := &Checker{Probe: &HTTP{URL: s.URL}, Config: fast(), Log: testLog(t), OnChange: func(r Result) {
		time.Sleep(20 * time.Millisecond) // a slow store
		stored.Store(r.Status)
	}}
	run(t, c)
	r, err := wait(t, c)
	if err != nil || r.Status != Unhealthy {
		t.Fatalf("got %+v, %v; want unhealthy", r, err)
	}
	if got := stored.Load(); got != Unhealthy {
		t.Errorf("WaitDecided returned %s while OnChange had stored %v", r.Status, got)
	}
}

// TestPausedChecksDoNotRun: while the container is paused no check runs
// and none counts; once it resumes the failures count again.
func TestPausedChecksDoNotRun(t *testing.T) {
	s, n := server(t, 500)
	var paused atomic.Bool
	paused.Store(true)
	c := &Checker{Probe: &HTTP{URL: s.URL}, Config: fast(), Log: testLog(t), Paused: paused.Load}
	run(t, c)
	time.Sleep(200 * time.Millisecond) // 20 intervals
	if got := n.Load(); got != 0 {
		t.Errorf("%d checks ran while paused", got)
	}
	if r := c.Last(); r.Status != Starting || r.Failures != 0 {
		t.Errorf("while paused: %+v, want Starting and no failures", r)
	}
	paused.Store(false)
	if r, err := wait(t, c); err != nil || r.Status != Unhealthy {
		t.Errorf("after resume: %+v, %v; want unhealthy", r, err)
	}
}
