// Command fusepipe benchmarks a fuse-pipe mount against the directory
// behind it. It serves a temporary directory with fusepipe.Server over a
// Unix socket pair, mounts it with fusepipe.Mount (once plain, once with
// the writeback cache) and runs the same operations on the mount and on
// the directory itself, printing a Markdown table.
//
// It needs root (or fusermount) and /dev/fuse. Usage:
//
//	go run ./bench/fusepipe [-dir /var/tmp] [-time 500ms] [-workers 16]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/fcvm/fcvm/internal/fusepipe"
	"golang.org/x/sys/unix"
)

type options struct {
	dir     string
	time    time.Duration
	workers int
	seqMiB  int
}

func main() {
	var o options
	flag.StringVar(&o.dir, "dir", os.TempDir(), "where to make the shared directory")
	flag.DurationVar(&o.time, "time", 500*time.Millisecond, "how long to run each latency measurement")
	flag.IntVar(&o.workers, "workers", 16, "workers for the small-file create rate")
	flag.IntVar(&o.seqMiB, "seq", 256, "MiB for sequential throughput")
	flag.Parse()
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench/fusepipe:", err)
		os.Exit(1)
	}
}

// target is a ratio to direct access the result must stay within.
type row struct {
	name   string
	unit   string  // "µs" (lower is better) or "MB/s", "files/s" (higher is better)
	target float64 // max slowdown vs direct; 0 for none
	vals   [3]float64
}

func run(o options, w io.Writer) error {
	base, err := os.MkdirTemp(o.dir, "fusepipe-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	host := filepath.Join(base, "host")
	if err := os.Mkdir(host, 0o755); err != nil {
		return err
	}
	targets := []string{host}
	for _, wb := range []bool{false, true} {
		mnt := filepath.Join(base, fmt.Sprintf("mnt-wb-%v", wb))
		if err := os.Mkdir(mnt, 0o755); err != nil {
			return err
		}
		unmount, err := serve(host, mnt, wb)
		if err != nil {
			return err
		}
		defer unmount()
		targets = append(targets, mnt)
	}
	if err := prepare(host); err != nil {
		return err
	}

	rows := []*row{
		{name: "getattr (stat)", unit: "µs", target: 2},
		{name: "4 KiB read (pread, cached)", unit: "µs", target: 2},
		{name: "4 KiB write (pwrite)", unit: "µs", target: 20},
		{name: "open+close", unit: "µs", target: 20},
		{name: "create+unlink", unit: "µs", target: 20},
		{name: "readdir 1000 entries", unit: "µs"},
		{name: "sequential write 1 MiB blocks", unit: "MB/s"},
		{name: "sequential read 1 MiB blocks (cold in guest)", unit: "MB/s"},
		{name: fmt.Sprintf("small-file create, %d workers", o.workers), unit: "files/s"},
	}
	for i, dir := range targets {
		var errs []error
		lat := func(r *row, f func() error) {
			d, err := latency(o.time, f)
			errs = append(errs, err)
			r.vals[i] = float64(d.Nanoseconds()) / 1000
		}
		f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		buf := make([]byte, 4096)
		var off int64
		next := func() int64 { off = (off + 4096) % (1 << 20); return off }
		lat(rows[0], func() error { var st unix.Stat_t; return unix.Stat(filepath.Join(dir, "data"), &st) })
		lat(rows[1], func() error { _, err := f.ReadAt(buf, next()); return err })
		lat(rows[2], func() error { _, err := f.WriteAt(buf, next()); return err })
		f.Close()
		lat(rows[3], func() error {
			fd, err := unix.Open(filepath.Join(dir, "data"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		})
		scratch := filepath.Join(dir, fmt.Sprintf("scratch-%d", i))
		lat(rows[4], func() error {
			fd, err := unix.Open(scratch, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			unix.Close(fd)
			return unix.Unlink(scratch)
		})
		lat(rows[5], func() error {
			d, err := os.Open(filepath.Join(dir, "dir1000"))
			if err != nil {
				return err
			}
			defer d.Close()
			names, err := d.Readdirnames(-1)
			if err == nil && len(names) != 1000 {
				err = fmt.Errorf("readdir: %d entries", len(names))
			}
			return err
		})
		mbs, err := seqWrite(filepath.Join(dir, fmt.Sprintf("seq-%d", i)), o.seqMiB)
		errs = append(errs, err)
		rows[6].vals[i] = mbs
		mbs, err = seqRead(filepath.Join(dir, "seqsrc"), o.seqMiB)
		errs = append(errs, err)
		rows[7].vals[i] = mbs
		rate, err := createRate(filepath.Join(dir, fmt.Sprintf("small-%d", i)), o.workers, o.time*4)
		errs = append(errs, err)
		rows[8].vals[i] = rate
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		// A fresh copy of the sequential-read source for the next mount:
		// cold in that mount's page cache, warm on the host.
		os.Remove(filepath.Join(host, fmt.Sprintf("seq-%d", i)))
	}

	fmt.Fprintf(w, "fuse-pipe vs direct, %s, %d CPUs, Go %s, server and client in one process over a Unix socket pair\n\n",
		kernel(), runtime.NumCPU(), runtime.Version())
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| operation\t direct\t fuse-pipe\t ratio\t fuse-pipe + writeback\t ratio\t target\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t")
	for _, r := range rows {
		ratio := func(v float64) string {
			if r.unit == "µs" {
				return fmt.Sprintf("%.1fx", v/r.vals[0])
			}
			return fmt.Sprintf("%.2fx", r.vals[0]/v) // slowdown
		}
		target := ""
		if r.target > 0 {
			target = fmt.Sprintf("≤ %gx", r.target)
		}
		fmt.Fprintf(tw, "| %s\t %s\t %s\t %s\t %s\t %s\t %s\t\n", r.name,
			format(r.vals[0], r.unit), format(r.vals[1], r.unit), ratio(r.vals[1]),
			format(r.vals[2], r.unit), ratio(r.vals[2]), target)
	}
	return tw.Flush()
}

func format(v float64, unit string) string {
	switch unit {
	case "µs":
		return fmt.Sprintf("%.2f µs", v)
	case "MB/s":
		return fmt.Sprintf("%.0f MB/s", v)
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "linux"
	}
	return "Linux " + unix.ByteSliceToString(u.Release[:])
}

// serve shares host at mnt and returns how to undo it.
func serve(host, mnt string, writeback bool) (func(), error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	srv, err := fusepipe.NewServer(host, fusepipe.ServerOptions{})
	if err != nil {
		return nil, err
	}
	go srv.ServeConn(context.Background(), conns[0])
	c, err := fusepipe.Mount(conns[1], mnt, fusepipe.MountOptions{Writeback: writeback})
	if err != nil {
		srv.Close()
		return nil, err
	}
	return func() {
		for range 50 {
			if c.Unmount() == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		srv.Close()
	}, nil
}

// prepare makes the files every measurement uses.
func prepare(host string) error {
	if err := os.WriteFile(filepath.Join(host, "data"), make([]byte, 1<<20), 0o644); err != nil {
		return err
	}
	dir := filepath.Join(host, "dir1000")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for i := range 1000 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file-%04d", i)), nil, 0o644); err != nil {
			return err
		}
	}
	f, err := os.Create(filepath.Join(host, "seqsrc"))
	if err != nil {
		return err
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	for range 256 {
		if _, err := f.Write(block); err != nil {
			return err
		}
	}
	return nil
}

// latency runs f repeatedly for about d (after a warm-up) and returns the
// mean time per call.
func latency(d time.Duration, f func() error) (time.Duration, error) {
	for range 100 {
		if err := f(); err != nil {
			return 0, err
		}
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		for range 100 {
			if err := f(); err != nil {
				return 0, err
			}
		}
		n += 100
	}
	return time.Since(start) / time.Duration(n), nil
}

func seqWrite(path string, mib int) (float64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	block := make([]byte, 1<<20)
	start := time.Now()
	for range mib {
		if _, err := f.Write(block); err != nil {
			f.Close()
			return 0, err
		}
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return float64(mib) * (1 << 20) / 1e6 / time.Since(start).Seconds(), nil
}

func seqRead(path string, mib int) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	start := time.Now()
	total := 0
	for total < mib<<20 {
		n, err := f.Read(block)
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	return float64(total) / 1e6 / time.Since(start).Seconds(), nil
}

// createRate creates 4 KiB files from many workers for about d and returns
// files per second.
func createRate(dir string, workers int, d time.Duration) (float64, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	var count atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	data := make([]byte, 4096)
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for i := 0; time.Since(start) < d; i++ {
				p := filepath.Join(dir, fmt.Sprintf("w%d-%d", w, i))
				fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err == nil {
					_, err = unix.Write(fd, data)
					if cerr := unix.Close(fd); err == nil {
						err = cerr
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}
