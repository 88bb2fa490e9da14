package uffdtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// HelperEnv carries a Job, as JSON, into a helper process.
const HelperEnv = "FCVM_UFFD_HELPER_JOB"

// Job is what a helper process does: map Regions, hand them to the server
// on Socket, then touch every page once.
type Job struct {
	Socket  string
	MemFile string
	Regions []RegionSpec
	// Shuffle touches pages in a seeded random order instead of in
	// region order.
	Shuffle bool
	Seed    uint64
	// Verify compares every page with the memory file after touching.
	Verify bool
	// DontNeed ranges are removed with madvise(MADV_DONTNEED) after the
	// touch and must then read as zeros.
	DontNeed []Range
	// StartAt, if set, is when to send the handshake: helpers started
	// together begin together, after their setup.
	StartAt time.Time
	// KeepLatencies returns every page's touch latency in Result.Lat.
	KeepLatencies bool
	// StallAfter, if positive, makes the helper print "stalled" after
	// touching that many pages and then sleep until killed.
	StallAfter int
}

// Range is Len bytes at Off in region Region.
type Range struct {
	Region   int
	Off, Len uint64
}

// Result is a helper's last line of output.
type Result struct {
	Pages   int
	Bytes   uint64
	Elapsed time.Duration // from the handshake to every page touched
	P50     time.Duration // per-page touch latency
	P99     time.Duration
	Error   string `json:",omitempty"`
	// Sum of the first byte of every page: keeps the touches from being
	// optimised away.
	Sum byte
	Lat []time.Duration `json:",omitempty"`
}

// RunHelper runs the Job in HelperEnv and exits, if there is one; else it
// returns at once. Call it first thing in TestMain or main.
func RunHelper() {
	spec := os.Getenv(HelperEnv)
	if spec == "" {
		return
	}
	var job Job
	res, err := func() (Result, error) {
		if err := json.Unmarshal([]byte(spec), &job); err != nil {
			return Result{}, err
		}
		return job.run()
	}()
	if err != nil {
		res.Error = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("%s\n", b)
	if err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

func (job Job) run() (Result, error) {
	var file []byte
	if job.Verify {
		var err error
		if file, err = os.ReadFile(job.MemFile); err != nil {
			return Result{}, err
		}
	}
	g, err := NewGuest(job.Regions)
	if err != nil {
		return Result{}, err
	}
	defer g.Close()
	if !job.StartAt.IsZero() {
		time.Sleep(time.Until(job.StartAt))
	}
	start := time.Now()
	if err := g.Handshake(job.Socket); err != nil {
		return Result{}, err
	}

	type page struct {
		region int
		off    uint64
	}
	var pages []page
	for i, s := range job.Regions {
		for off := uint64(0); off < s.Size; off += s.PageSize {
			pages = append(pages, page{i, off})
		}
	}
	if job.Shuffle {
		r := rand.New(rand.NewPCG(job.Seed, 1))
		r.Shuffle(len(pages), func(a, b int) { pages[a], pages[b] = pages[b], pages[a] })
	}
	lat := make([]time.Duration, len(pages))
	var res Result
	for k, p := range pages {
		if job.StallAfter > 0 && k == job.StallAfter {
			fmt.Println("stalled")
			select {}
		}
		t := time.Now()
		res.Sum += g.Mem[p.region][p.off]
		lat[k] = time.Since(t)
		res.Bytes += job.Regions[p.region].PageSize
	}
	res.Elapsed = time.Since(start)
	res.Pages = len(pages)
	slices.Sort(lat)
	if job.KeepLatencies {
		res.Lat = lat
	}
	if len(lat) > 0 {
		res.P50 = lat[len(lat)/2]
		res.P99 = lat[len(lat)*99/100]
	}

	if job.Verify {
		for _, p := range pages {
			s := job.Regions[p.region]
			got := g.Mem[p.region][p.off : p.off+s.PageSize]
			want := file[s.Offset+p.off : s.Offset+p.off+s.PageSize]
			if !bytes.Equal(got, want) {
				return res, fmt.Errorf("region %d page at %#x differs from the memory file at %#x", p.region, p.off, s.Offset+p.off)
			}
		}
	}
	for _, r := range job.DontNeed {
		m := g.Mem[r.Region][r.Off : r.Off+r.Len]
		if err := unix.Madvise(m, unix.MADV_DONTNEED); err != nil {
			return res, fmt.Errorf("madvise region %d [%#x, +%#x): %w", r.Region, r.Off, r.Len, err)
		}
		if i := slices.IndexFunc(m, func(b byte) bool { return b != 0 }); i >= 0 {
			return res, fmt.Errorf("region %d byte %#x is %#x after MADV_DONTNEED, want 0", r.Region, r.Off+uint64(i), m[i])
		}
	}
	return res, nil
}

// Helper is a running helper process.
type Helper struct {
	Cmd    *exec.Cmd
	lines  chan string
	stdout io.ReadCloser
	out    bytes.Buffer // stderr
}

// StartHelper runs exe (normally the current test or benchmark binary,
// which calls RunHelper first) as a helper doing job.
func StartHelper(exe string, job Job, args ...string) (*Helper, error) {
	h, err := NewHelper(exe, job, args...)
	if err != nil {
		return nil, err
	}
	return h, h.Start()
}

// NewHelper prepares what StartHelper runs, for a caller that sets more
// of h.Cmd (its credentials, say) before h.Start.
func NewHelper(exe string, job Job, args ...string) (*Helper, error) {
	spec, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	h := &Helper{lines: make(chan string, 16)}
	h.Cmd = exec.Command(exe, args...)
	h.Cmd.Env = append(os.Environ(), HelperEnv+"="+string(spec))
	h.Cmd.Stderr = &h.out
	if h.stdout, err = h.Cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	return h, nil
}

// Start starts a helper made by NewHelper.
func (h *Helper) Start() error {
	if err := h.Cmd.Start(); err != nil {
		return err
	}
	go func() {
		sc := bufio.NewScanner(h.stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		io.Copy(io.Discard, h.stdout)
		close(h.lines)
	}()
	return nil
}

// WaitLine waits for the helper to print want.
func (h *Helper) WaitLine(want string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				return fmt.Errorf("helper exited before printing %q: %s", want, h.out.String())
			}
			if l == want {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("helper did not print %q within %v", want, timeout)
		}
	}
}

// Wait waits for the helper to exit and returns its result.
func (h *Helper) Wait(timeout time.Duration) (Result, error) {
	var last string
	deadline := time.After(timeout)
	for done := false; !done; {
		select {
		case l, ok := <-h.lines:
			if !ok {
				done = true
				break
			}
			last = l
		case <-deadline:
			h.Cmd.Process.Kill()
			h.Cmd.Wait()
			return Result{}, fmt.Errorf("helper did not finish within %v (stuck on a fault?)", timeout)
		}
	}
	werr := h.Cmd.Wait()
	var res Result
	if err := json.Unmarshal([]byte(last), &res); err != nil {
		return res, fmt.Errorf("helper: %v, output %q, stderr %s", werr, last, strings.TrimSpace(h.out.String()))
	}
	if res.Error != "" {
		return res, fmt.Errorf("helper: %s", res.Error)
	}
	return res, werr
}
