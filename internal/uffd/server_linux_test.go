package uffd

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/syncbuf"
	"github.com/fcvm/fcvm/internal/uffd/uffdtest"
)

func TestMain(m *testing.M) {
	uffdtest.RunHelper()
	os.Exit(m.Run())
}

// layout is guest memory as the helpers map it: regions sent out of file
// order, base pages and one hugetlbfs region.
var layout = []uffdtest.RegionSpec{
	{Size: 2 << 20, Offset: 1<<20 + 256<<10, PageSize: PageSize4K},
	{Size: 1<<20 + 256<<10, Offset: 0, PageSize: PageSize4K},
	{Size: 4 << 20, Offset: 3<<20 + 256<<10, PageSize: PageSize2M},
}

const layoutSize = 7<<20 + 256<<10

// hugePagesPerClient is what one helper with layout needs.
const hugePagesPerClient = 2

// logBuf collects the server's log for assertions.
type logBuf struct{ syncbuf.Buffer }

// waitFor waits until the log has a line containing every one of subs.
func (l *logBuf) waitFor(t *testing.T, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(l.String(), "\n") {
			if containsAll(line, subs) {
				return line
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no log line containing %q; log:\n%s", subs, l.String())
	return ""
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests use the real kernel userfaultfd and hugetlbfs and must run as root")
	}
}

func reserveHugePages(t testing.TB, n int) {
	t.Helper()
	restore, err := uffdtest.ReserveHugePages(n)
	if err != nil {
		t.Fatalf("huge pages: %v", err)
	}
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Errorf("restore vm.nr_hugepages: %v", err)
		}
	})
}

// writeMemFile writes size random bytes, different in every page.
func writeMemFile(t testing.TB, dir string, size int) string {
	t.Helper()
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	path := filepath.Join(dir, "mem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type testServer struct {
	*Server
	log  *logBuf
	dir  string
	done chan error
}

func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	ts := &testServer{log: &logBuf{}, done: make(chan error, 1)}
	if opts.MemFile == "" {
		ts.dir = t.TempDir()
		opts.MemFile = writeMemFile(t, ts.dir, layoutSize)
	} else {
		ts.dir = filepath.Dir(opts.MemFile)
	}
	if opts.Socket == "" {
		opts.Socket = filepath.Join(ts.dir, "uffd.sock")
	}
	opts.Log = slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = srv
	go func() { ts.done <- srv.Serve() }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-ts.done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.log.String())
		}
	})
	return ts
}

func (ts *testServer) job() uffdtest.Job {
	return uffdtest.Job{Socket: ts.SocketPath(), MemFile: ts.opts.MemFile, Regions: layout, Verify: true}
}

func startHelper(t testing.TB, job uffdtest.Job) *uffdtest.Helper {
	t.Helper()
	h, err := uffdtest.StartHelper(os.Args[0], job, "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func runHelper(t testing.TB, job uffdtest.Job) uffdtest.Result {
	t.Helper()
	res, err := startHelper(t, job).Wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestServeByteExact(t *testing.T) {
	requireRoot(t)
	reserveHugePages(t, hugePagesPerClient)
	ts := startServer(t, Options{})
	h := startHelper(t, ts.job())
	res, err := h.Wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pages != 2*256+320+2 {
		t.Errorf("helper touched %d pages, want %d", res.Pages, 2*256+320+2)
	}
	line := ts.log.waitFor(t, "client gone", fmt.Sprintf("pid=%d", h.Cmd.Process.Pid))
	if !containsAll(line, []string{"reason=\"client exited\"", "faults=834", fmt.Sprintf("bytes=%d", layoutSize)}) {
		t.Errorf("exit log line lacks the reason or numbers: %s", line)
	}
}

func TestServeDontNeedGivesZeros(t *testing.T) {
	requireRoot(t)
	reserveHugePages(t, hugePagesPerClient)
	ts := startServer(t, Options{})
	job := ts.job()
	job.DontNeed = []uffdtest.Range{
		{Region: 0, Off: 128 << 10, Len: 64 << 10},
		{Region: 1, Off: 0, Len: 4096},
		{Region: 2, Off: 2 << 20, Len: 2 << 20},
	}
	runHelper(t, job)
	line := ts.log.waitFor(t, "client gone")
	if !strings.Contains(line, "zero_faults=18") {
		t.Errorf("want 16+1+1 zero faults: %s", line)
	}
}

func TestServeEightClients(t *testing.T) {
	requireRoot(t)
	reserveHugePages(t, 8*hugePagesPerClient)
	ts := startServer(t, Options{})
	var hs []*uffdtest.Helper
	for i := range 8 {
		job := ts.job()
		job.Shuffle, job.Seed = true, uint64(i)
		hs = append(hs, startHelper(t, job))
	}
	for i, h := range hs {
		if _, err := h.Wait(60 * time.Second); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	for _, h := range hs {
		ts.log.waitFor(t, "client gone", fmt.Sprintf("pid=%d", h.Cmd.Process.Pid), "faults=834")
	}
}

func TestServeClientKilledMidway(t *testing.T) {
	requireRoot(t)
	reserveHugePages(t, 5*hugePagesPerClient)
	ts := startServer(t, Options{})
	victimJob := ts.job()
	victimJob.StallAfter = 300
	victim := startHelper(t, victimJob)
	if err := victim.WaitLine("stalled", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var others []*uffdtest.Helper
	for i := range 3 {
		job := ts.job()
		job.Shuffle, job.Seed = true, uint64(i)
		others = append(others, startHelper(t, job))
	}
	if err := victim.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	victim.Cmd.Wait()
	ts.log.waitFor(t, "client gone", fmt.Sprintf("pid=%d", victim.Cmd.Process.Pid), `reason="client exited"`)
	for i, h := range others {
		if _, err := h.Wait(60 * time.Second); err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	// New clients are still served.
	runHelper(t, ts.job())
	deadline := time.Now().Add(5 * time.Second)
	for len(ts.Stats()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := ts.Stats(); len(st) > 0 {
		t.Errorf("clients left after all exited: %+v", st)
	}
}

func TestServeRefusesMalformedHandshakes(t *testing.T) {
	requireRoot(t)
	reserveHugePages(t, hugePagesPerClient)
	ts := startServer(t, Options{HandshakeTimeout: 300 * time.Millisecond})
	g, err := uffdtest.NewGuest(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g2, err := uffdtest.NewGuest(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])

	region := func(addr, size, off, ps uint64) string {
		return fmt.Sprintf(`{"base_host_virt_addr":%d,"size":%d,"offset":%d,"page_size":%d,"page_size_kib":%d}`, addr, size, off, ps, ps)
	}
	good := "[" + region(1<<30, 1<<20, 0, PageSize4K) + "]"
	fdsBefore := openFDs(t)
	for _, tc := range []struct {
		name string
		msg  string
		fds  []int
		want string
	}{
		{"not json", "GET / HTTP/1.0\r\n\r\n", []int{g.UFFD}, "not a JSON array"},
		{"no fd", good, nil, "no file descriptor passed"},
		{"two fds", good, []int{g.UFFD, g2.UFFD}, "2 file descriptors passed"},
		{"not a userfaultfd", good, []int{pipe[0]}, "not a userfaultfd"},
		{"outside the file", "[" + region(1<<30, 1<<20, layoutSize-4096, PageSize4K) + "]", []int{g.UFFD}, "outside the memory file"},
		{"overlapping", "[" + region(1<<30, 1<<20, 0, PageSize4K) + "," + region(1<<30+4096, 4096, 2<<20, PageSize4K) + "]", []int{g.UFFD}, "overlap in the address space"},
		{"zero size", "[" + region(1<<30, 0, 0, PageSize4K) + "]", []int{g.UFFD}, "zero size"},
		{"bad page size", "[" + region(1<<30, 1<<20, 0, 16384) + "]", []int{g.UFFD}, "neither 4 KiB nor 2 MiB"},
		{"sends nothing", "", nil, "nothing sent within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conn *net.UnixConn
			var err error
			if tc.msg == "" {
				conn, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: ts.SocketPath(), Net: "unix"})
			} else {
				conn, err = uffdtest.Send(ts.SocketPath(), []byte(tc.msg), tc.fds...)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ts.log.waitFor(t, "refused client", tc.want)
			// The server hangs up on a refused client.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
				t.Errorf("connection not closed after refusal: n=%d err=%v", n, err)
			}
		})
	}
	// Refusals leak no descriptors, and a good client is still served.
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > fdsBefore && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := openFDs(t); n > fdsBefore {
		t.Errorf("%d descriptors open after the refusals, %d before", n, fdsBefore)
	}
	runHelper(t, ts.job())
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestServeWorkingSet(t *testing.T) {
	requireRoot(t)
	reserveHugePages(t, hugePagesPerClient)
	ts := startServer(t, Options{RecordWorkingSet: true, PrefetchWorkingSet: true})
	first := ts.job()
	first.Shuffle, first.Seed = true, 42
	runHelper(t, first)
	ts.log.waitFor(t, "recorded working set", "pages=834")
	if _, err := os.Stat(ts.opts.MemFile + ".ws"); err != nil {
		t.Fatal(err)
	}
	// The next client gets the set before it asks, and still reads
	// zeros where it gives memory back.
	second := ts.job()
	second.DontNeed = []uffdtest.Range{{Region: 0, Off: 0, Len: 8192}, {Region: 2, Off: 0, Len: 2 << 20}}
	h := startHelper(t, second)
	if _, err := h.Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	line := ts.log.waitFor(t, "client gone", fmt.Sprintf("pid=%d", h.Cmd.Process.Pid))
	if strings.Contains(line, "prefetched=0 ") {
		t.Errorf("second client got nothing prefetched: %s", line)
	}
	if !strings.Contains(line, "zero_faults=3") {
		t.Errorf("want 3 zero faults after MADV_DONTNEED: %s", line)
	}
}

func TestServerLifecycle(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	mem := writeMemFile(t, dir, 1<<20)
	sock := filepath.Join(dir, "s.sock")

	// A stale socket from a dead server is replaced.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	srv, err := NewServer(Options{MemFile: mem, Socket: sock})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	// A live one is not taken over.
	if _, err := NewServer(Options{MemFile: mem, Socket: sock}); err == nil || !strings.Contains(err.Error(), "another server") {
		t.Errorf("second server on a live socket: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if _, err := NewServer(Options{MemFile: filepath.Join(dir, "nope"), Socket: sock}); err == nil {
		t.Error("server for a missing memory file")
	}
}

// BenchmarkServe has one helper process touch every page of a region once
// per iteration and reports the pages it got per second and the p50/p99
// touch latency. bench/uffd compares the same against a C handler.
func BenchmarkServe(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root")
	}
	for _, tc := range []struct {
		name     string
		ps, size uint64
	}{
		{"4K", PageSize4K, 16 << 20},
		{"2M", PageSize2M, 64 << 20},
	} {
		b.Run(tc.name, func(b *testing.B) {
			reserveHugePages(b, int(64<<20/PageSize2M)+1)
			dir := b.TempDir()
			ts := startServer(b, Options{MemFile: writeMemFile(b, dir, int(tc.size))})
			job := uffdtest.Job{Socket: ts.SocketPath(), Regions: []uffdtest.RegionSpec{{Size: tc.size, PageSize: tc.ps}}}
			var pages int
			var elapsed, p50, p99 time.Duration
			for b.Loop() {
				res := runHelper(b, job)
				pages += res.Pages
				elapsed += res.Elapsed
				p50, p99 = p50+res.P50, p99+res.P99
			}
			b.ReportMetric(float64(pages)/elapsed.Seconds(), "pages/s")
			b.ReportMetric(float64(p50.Nanoseconds())/float64(b.N), "p50-ns")
			b.ReportMetric(float64(p99.Nanoseconds())/float64(b.N), "p99-ns")
		})
	}
}
