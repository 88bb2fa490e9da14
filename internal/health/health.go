package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// The statuses, as the record stores them and `fcvm ls` shows them.
const (
	Starting  = "starting"
	Healthy   = "healthy"
	Unhealthy = "unhealthy"
)

// podman's defaults.
const (
	DefaultInterval = 30 * time.Second
	DefaultTimeout  = 30 * time.Second
	DefaultRetries  = 3
)

// ErrStopped: the checker ended (its context was cancelled, e.g. because
// the container exited) before the status was decided.
var ErrStopped = errors.New("health: checks stopped before the container was healthy")

// A Probe runs one check; nil means it passed. ctx carries the check's
// timeout.
type Probe interface {
	Check(ctx context.Context) error
}

// Config is how often and how patiently a probe runs.
type Config struct {
	// Interval is the time from the start of one check to the start of
	// the next.
	Interval time.Duration
	// Timeout bounds one check; a check that takes longer fails.
	Timeout time.Duration
	// StartPeriod is the time after the container started during which
	// failed checks do not count.
	StartPeriod time.Duration
	// Retries is how many failed checks in a row make the container
	// unhealthy.
	Retries int
}

// Validate reports a config that cannot work, naming the flag.
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("--health-interval %s: must be positive, e.g. 30s", c.Interval)
	case c.Timeout <= 0:
		return fmt.Errorf("--health-timeout %s: must be positive, e.g. 30s", c.Timeout)
	case c.StartPeriod < 0:
		return fmt.Errorf("--health-start-period %s: must not be negative", c.StartPeriod)
	case c.Retries < 1:
		return fmt.Errorf("--health-retries %d: must be at least 1", c.Retries)
	}
	return nil
}

// Result is the outcome of the checks so far.
type Result struct {
	// Status is Starting, Healthy or Unhealthy.
	Status string
	// Failures is how many failed checks in a row count toward Retries
	// (those in the start period do not).
	Failures int
	// Err is the last check's error; nil if it passed.
	Err error
	// Checks is how many checks have run.
	Checks int
}

// Checker runs Probe by Config and tracks the status.
type Checker struct {
	Probe  Probe
	Config Config
	// OnChange, if set, is called with the new result each time the
	// status changes (first with Starting, before the first check). It
	// returns before WaitDecided and Last see the new status, so what it
	// records (a VM's stored health) is current when a waiter wakes.
	OnChange func(Result)
	Log      *slog.Logger
	// Paused, if set, says the container is paused (its VM's vCPUs are
	// stopped): no check runs then, and one that was running when the
	// pause came does not count, as podman skips a paused container's
	// checks. Otherwise a paused sandbox would turn unhealthy.
	Paused func() bool

	// mu guards the fields below.
	mu      sync.Mutex
	last    Result
	changed chan struct{} // closed and replaced on every status change
	stopped bool
}

// Run checks until ctx ends, then returns ctx's error. Call it once.
func (c *Checker) Run(ctx context.Context) error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		c.mu.Lock()
		c.stopped = true
		c.notifyLocked()
		c.mu.Unlock()
	}()
	start := time.Now()
	res := Result{Status: Starting}
	c.publish(res, true)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		began := time.Now()
		if c.paused() {
			t.Reset(c.Config.Interval)
			continue
		}
		err := c.check(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && c.paused() {
			t.Reset(c.Config.Interval)
			continue
		}
		inStart := began.Sub(start) < c.Config.StartPeriod
		prev := res.Status
		res = next(res, err, inStart, c.Config.Retries)
		log.Debug("health check", "status", res.Status, "failures", res.Failures, "err", err)
		c.publish(res, res.Status != prev)
		t.Reset(max(0, c.Config.Interval-time.Since(began)))
	}
}

// next applies podman's rules to one check's outcome.
func next(r Result, err error, inStartPeriod bool, retries int) Result {
	r.Checks++
	r.Err = err
	if err == nil {
		r.Failures = 0
		r.Status = Healthy
		return r
	}
	r.Failures++
	if inStartPeriod {
		// Failures during the start period are not counted, so that a
		// slow container is not declared unhealthy while it warms up.
		r.Failures = 0
		return r
	}
	if r.Failures >= retries {
		r.Status = Unhealthy
	}
	return r
}

func (c *Checker) paused() bool { return c.Paused != nil && c.Paused() }

func (c *Checker) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.Config.Timeout)
	defer cancel()
	err := c.Probe.Check(ctx)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("check timed out after %s: %w", c.Config.Timeout, err)
	}
	return err
}

func (c *Checker) publish(r Result, changed bool) {
	if changed && c.OnChange != nil {
		c.OnChange(r)
	}
	c.mu.Lock()
	c.last = r
	if changed {
		c.notifyLocked()
	}
	c.mu.Unlock()
}

func (c *Checker) notifyLocked() {
	if c.changed != nil {
		close(c.changed)
	}
	c.changed = make(chan struct{})
}

// Last returns the latest result.
func (c *Checker) Last() Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// WaitDecided blocks until the status is Healthy or Unhealthy and returns
// that result. It returns [ErrStopped] (with the last result) if Run ends
// first, and ctx's error if ctx ends first.
func (c *Checker) WaitDecided(ctx context.Context) (Result, error) {
	for {
		c.mu.Lock()
		r, stopped := c.last, c.stopped
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		ch := c.changed
		c.mu.Unlock()
		switch {
		case r.Status == Healthy || r.Status == Unhealthy:
			return r, nil
		case stopped:
			return r, ErrStopped
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
}
