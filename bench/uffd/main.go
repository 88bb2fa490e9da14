// Command uffd benchmarks fcvm's UFFD memory server against a minimal
// single-threaded C handler (chandler.c, built with gcc at run time), in
// the same run on the same machine: pages per second and per-page fault
// latency for 4 KiB and 2 MiB pages, one and eight clients, with and
// without working-set prefetch. Clients are re-executions of this binary
// that do what Firecracker does (see package uffdtest). Run as root.
//
//	go run ./bench/uffd [-rounds 5] [-mib4k 32] [-mib2m 128]
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fcvm/fcvm/internal/uffd"
	"github.com/fcvm/fcvm/internal/uffd/uffdtest"
)

//go:embed chandler.c
var chandlerSrc []byte

// serveEnv makes this binary the Go handler process: "MEMFILE SOCKET
// WORKINGSET" (WORKINGSET empty for no prefetch). The Go server runs in a
// process of its own, as the C handler does, so that the benchmark's own
// work (decoding results, GC) does not land on it.
const serveEnv = "FCVM_UFFD_BENCH_SERVE"

func main() {
	uffdtest.RunHelper()
	if spec, ok := os.LookupEnv(serveEnv); ok {
		if err := serveGo(strings.Split(spec, "\n")); err != nil {
			fmt.Fprintln(os.Stderr, "bench/uffd serve:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "rounds per configuration; handlers alternate within a round")
	flag.IntVar(&o.mib4k, "mib4k", 32, "guest memory per client with 4 KiB pages, MiB")
	flag.IntVar(&o.mib2m, "mib2m", 128, "guest memory per client with 2 MiB pages, MiB")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/uffd:", err)
		os.Exit(1)
	}
}

type options struct {
	rounds, mib4k, mib2m int
}

type handler string

const (
	handlerC          handler = "C (chandler.c)"
	handlerGo         handler = "Go (internal/uffd)"
	handlerGoPrefetch handler = "Go + working-set prefetch"
)

// sample is one measured run of N clients against one handler.
type sample struct {
	pagesPerSec float64
	lat         []time.Duration
}

func run(o options) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: userfaultfd for other processes and huge pages need it")
	}
	dir, err := os.MkdirTemp("", "uffd-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	chandler, err := buildC(dir)
	if err != nil {
		return err
	}
	restore, err := uffdtest.ReserveHugePages(8*o.mib2m/2 + 8)
	if err != nil {
		return err
	}
	defer restore()

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "page\tclients\thandler\tpages/s\tvs C\tp50\tp99\t")
	for _, ps := range []uint64{uffd.PageSize4K, uffd.PageSize2M} {
		size := uint64(o.mib4k) << 20
		if ps == uffd.PageSize2M {
			size = uint64(o.mib2m) << 20
		}
		mem, err := writeMemFile(dir, size)
		if err != nil {
			return err
		}
		for _, clients := range []int{1, 8} {
			results := map[handler][]sample{}
			for round := range o.rounds {
				for _, h := range []handler{handlerC, handlerGo, handlerGoPrefetch} {
					s, err := measure(h, chandler, dir, mem, ps, size, clients)
					if err != nil {
						return fmt.Errorf("%s, %d KiB pages, %d clients, round %d: %w", h, ps>>10, clients, round, err)
					}
					results[h] = append(results[h], s)
				}
			}
			cRate := median(results[handlerC])
			for _, h := range []handler{handlerC, handlerGo, handlerGoPrefetch} {
				rate := median(results[h])
				var lat []time.Duration
				for _, s := range results[h] {
					lat = append(lat, s.lat...)
				}
				slices.Sort(lat)
				fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%.0f%%\t%s\t%s\t\n", pageName(ps), clients, h, rate, 100*rate/cRate,
					lat[len(lat)/2].Round(100*time.Nanosecond), lat[len(lat)*99/100].Round(100*time.Nanosecond))
			}
		}
	}
	return tw.Flush()
}

func pageName(ps uint64) string {
	if ps == uffd.PageSize2M {
		return "2 MiB"
	}
	return "4 KiB"
}

// median is the median pages/s over rounds: rounds differ by what else
// the machine is doing, and the median ignores one bad round.
func median(ss []sample) float64 {
	r := make([]float64, len(ss))
	for i, s := range ss {
		r[i] = s.pagesPerSec
	}
	sort.Float64s(r)
	return r[len(r)/2]
}

func buildC(dir string) (string, error) {
	src := filepath.Join(dir, "chandler.c")
	bin := filepath.Join(dir, "chandler")
	if err := os.WriteFile(src, chandlerSrc, 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command("gcc", "-O2", "-Wall", "-o", bin, src).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gcc chandler.c (apt-get install gcc): %v: %s", err, out)
	}
	return bin, nil
}

func writeMemFile(dir string, size uint64) (string, error) {
	b := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(b)
	path := filepath.Join(dir, fmt.Sprintf("mem-%d", size))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	// Written back before any handler reads it, so writeback does not
	// land on whichever handler runs first.
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// measure starts the handler, then clients that each touch every page of
// one region once, all beginning at the same instant, and returns the
// pages all of them got per second of wall time and every touch's
// latency.
func measure(h handler, chandler, dir, mem string, ps, size uint64, clients int) (sample, error) {
	sock := filepath.Join(dir, "bench.sock")
	job := uffdtest.Job{
		Socket:        sock,
		MemFile:       mem,
		Regions:       []uffdtest.RegionSpec{{Size: size, Offset: 0, PageSize: ps}},
		Verify:        true,
		KeepLatencies: true,
	}
	self, err := os.Executable()
	if err != nil {
		return sample{}, err
	}
	ws := ""
	if h == handlerGoPrefetch {
		ws = filepath.Join(dir, filepath.Base(mem)+".ws")
		if _, err := os.Stat(ws); err != nil {
			// Record the working set with one unmeasured client.
			stop, err := startHandler(exec.Command(self), []string{mem, sock, ws})
			if err != nil {
				return sample{}, err
			}
			_, err = runClients(self, job, 1)
			stop()
			if err != nil {
				return sample{}, err
			}
		}
	}
	cmd := exec.Command(chandler, mem, sock)
	var env []string
	if h != handlerC {
		cmd = exec.Command(self)
		env = []string{mem, sock, ws}
	}
	stop, err := startHandler(cmd, env)
	if err != nil {
		return sample{}, err
	}
	defer stop()
	return runClients(self, job, clients)
}

// startHandler starts a handler process and waits until it listens.
func startHandler(cmd *exec.Cmd, serve []string) (stop func(), err error) {
	if serve != nil {
		cmd.Env = append(os.Environ(), serveEnv+"="+strings.Join(serve, "\n"))
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	line := make([]byte, 6)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "ready\n" {
		stop()
		return nil, fmt.Errorf("%s did not start: %q %v", cmd.Path, line, err)
	}
	return stop, nil
}

// serveGo runs the Go server until SIGTERM.
func serveGo(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("bad %s", serveEnv)
	}
	opts := uffd.Options{MemFile: args[0], Socket: args[1]}
	if args[2] != "" {
		opts.WorkingSet = args[2]
		opts.RecordWorkingSet, opts.PrefetchWorkingSet = true, true
	}
	srv, err := uffd.NewServer(opts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Println("ready")
	return srv.Serve()
}

func runClients(self string, job uffdtest.Job, n int) (sample, error) {
	// Enough for n processes to start and read the memory file on two
	// cores before they hand over their userfaultfds together.
	job.StartAt = time.Now().Add(time.Duration(300+150*n) * time.Millisecond)
	var hs []*uffdtest.Helper
	for range n {
		h, err := uffdtest.StartHelper(self, job)
		if err != nil {
			return sample{}, err
		}
		hs = append(hs, h)
	}
	var s sample
	var slowest time.Duration
	var pages int
	var errs []string
	for _, h := range hs {
		res, err := h.Wait(5 * time.Minute)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if late := time.Since(job.StartAt); late < 0 {
			errs = append(errs, "clients finished before they were due to start")
		}
		slowest = max(slowest, res.Elapsed)
		pages += res.Pages
		s.lat = append(s.lat, res.Lat...)
	}
	if len(errs) > 0 {
		return s, errors.New(strings.Join(errs, "; "))
	}
	s.pagesPerSec = float64(pages) / slowest.Seconds()
	return s, nil
}
