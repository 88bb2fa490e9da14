// Command run benchmarks fcvm's VM launch and clone paths on this host and
// prints tables of phase times (medians) and memory:
//
//	go run ./bench/run -n 5 -clones 10
//
// It uses the data dir of $FCVM_DATA_DIR (run `fcvm setup` first) and
// boots real VMs with the qemu driver (KVM when available, else TCG).
// Each cold run follows a bare boot of the same kernel whose /init only
// reboots (bench/bareinit): the floor the cold run is compared with. Run
// it from the repository's root (it builds bench/bareinit).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/fcvm/fcvm/bench/busybox"
	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/engine"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
)

func main() {
	n := flag.Int("n", 5, "cold runs")
	clones := flag.Int("clones", 10, "clones for the clone and memory measurements (0: skip)")
	memory := flag.Int("memory", 512, "guest memory in MiB")
	image := flag.String("image", "", "image reference (default: a busybox OCI archive built here)")
	netMode := flag.String("network", "none", "network mode of the VMs: none, rootless or bridged")
	flag.IntVar(&execRuns, "execs", 50, "exec round trips per kind (0: skip)")
	flag.Parse()
	if err := run(*n, *clones, *memory, *image, *netMode); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type sample map[string]time.Duration

var phaseOrder = []string{"checks", "image", "record", "disks", "network", "vmm spawn", "host total", "guest boot to agent", "container started", "container exited", "total"}

func run(n, clones, memMiB int, image, netMode string) error {
	dirs, err := datadir.Default()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	if image == "" {
		path := filepath.Join(os.TempDir(), "fcvm-bench-busybox.tar")
		if err := busybox.WriteOCIArchive(path); err != nil {
			return err
		}
		image = "oci-archive:" + path
	}
	opts := supervisor.Options{Image: image, Cmd: []string{"true"}, CPUs: 1, MemoryMiB: memMiB, VMM: "qemu", Network: netMode, Remove: true, TLSVerify: true, DiskMiB: 4096}

	// Warm the image cache so every run measures the same thing.
	if vm, err := supervisor.Launch(ctx, log, dirs, opts); err != nil {
		return err
	} else {
		vm.Teardown(true)
	}

	// Bare boots alternate with the cold runs, so that load from
	// elsewhere falls on both alike.
	tmp, err := os.MkdirTemp("", "fcvm-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bare, err := bareInitrd(tmp)
	if err != nil {
		return err
	}
	var cold, bareRuns []sample
	for i := 0; i < n; i++ {
		d, err := bareBoot(ctx, dirs, bare, memMiB)
		if err != nil {
			return fmt.Errorf("bare boot %d: %w", i, err)
		}
		bareRuns = append(bareRuns, sample{"bare": d})
		s, err := coldRun(ctx, log, dirs, opts)
		if err != nil {
			return fmt.Errorf("cold run %d: %w", i, err)
		}
		cold = append(cold, s)
		fmt.Fprintf(os.Stderr, "cold run %d: total %s\n", i+1, s["total"].Round(time.Millisecond))
	}
	fmt.Printf("Cold run of `true` (%d runs, median; qemu, %d MiB, --network %s)\n\n", n, memMiB, opts.Network)
	printTable(cold, phaseOrder)
	b, total := median(bareRuns, "bare"), median(cold, "total")
	fmt.Printf("\nBare boot (same kernel, arguments and QEMU machine; /init only reboots), VMM start to exit: %s\n", fmtDur(b))
	fmt.Printf("cold total / bare boot: %.2fx (target at most 1.6x)\n", total.Seconds()/b.Seconds())
	fmt.Printf("container started / guest boot to agent: %.0f%% (target at most 15%%)\n",
		100*median(cold, "container started").Seconds()/median(cold, "guest boot to agent").Seconds())

	if clones > 0 {
		if err := cloneBench(ctx, log, dirs, opts, clones); err != nil {
			return err
		}
	}
	return nil
}

func coldRun(ctx context.Context, log *slog.Logger, dirs datadir.Dirs, o supervisor.Options) (sample, error) {
	s := sample{}
	t0 := time.Now()
	vm, err := supervisor.Launch(ctx, log, dirs, o)
	if err != nil {
		return nil, err
	}
	var host time.Duration
	for _, p := range vm.Phases {
		s[p.Name] = p.Dur
		host += p.Dur
	}
	s["host total"] = host
	spawned := time.Now()
	var mu sync.Mutex
	last := spawned
	vm.Trace = func(ev string) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		switch ev {
		case "agent ready":
			s["guest boot to agent"] = now.Sub(last)
		case "container started":
			s["container started"] = now.Sub(last)
		}
		last = now
	}
	code, err := vm.Run(ctx, supervisor.Stdio{}, nil)
	mu.Lock()
	s["container exited"] = time.Since(last)
	mu.Unlock()
	s["total"] = time.Since(t0)
	vm.Finish(code, err)
	vm.PowerOff(5 * time.Second)
	vm.Teardown(true)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("container exited %d", code)
	}
	return s, nil
}

func cloneBench(ctx context.Context, log *slog.Logger, dirs datadir.Dirs, o supervisor.Options, clones int) error {
	o.Cmd = []string{"sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /dev/shm/c; sleep 1; done"}
	o.Remove = true
	// The original: cold boot to ready.
	var coldReady time.Duration
	t0 := time.Now()
	orig, err := supervisor.Launch(ctx, log, dirs, o)
	if err != nil {
		return err
	}
	defer func() { orig.PowerOff(time.Second); orig.Teardown(true) }()
	ready := make(chan struct{})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go orig.Run(runCtx, supervisor.Stdio{}, func() { coldReady = time.Since(t0); close(ready) })
	<-ready
	time.Sleep(3 * time.Second)
	origPSS := pss(orig.Record.VMM)
	if err := execBench(ctx, engine.New(dirs, log), orig.Record.ID); err != nil {
		return err
	}

	tag := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	ts := time.Now()
	if _, err := orig.Snapshot(ctx, tag); err != nil {
		return err
	}
	snapTime := time.Since(ts)
	defer os.RemoveAll(filepath.Join(dirs.Snapshots(), tag))

	var samples []sample
	var vms []*supervisor.VM
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
		for _, vm := range vms {
			vm.PowerOff(time.Second)
			vm.Teardown(true)
		}
	}()
	for i := 0; i < clones; i++ {
		s := sample{}
		t0 := time.Now()
		vm, err := supervisor.LaunchClone(ctx, log, dirs, supervisor.CloneOptions{Tag: tag, Remove: true})
		if err != nil {
			return fmt.Errorf("clone %d: %w", i, err)
		}
		var host time.Duration
		for _, p := range vm.Phases {
			s[p.Name] = p.Dur
			host += p.Dur
		}
		// The clone target is the host's own work, up to handing the
		// restore to the VMM; the restore itself is the VMM's start-up.
		s["host side before restore"] = host - s["restore"]
		s["host total"] = host
		vms = append(vms, vm)
		ready := make(chan struct{})
		cctx, c := context.WithCancel(ctx)
		cancels = append(cancels, c)
		go vm.Run(cctx, supervisor.Stdio{}, func() { close(ready) })
		select {
		case <-ready:
		case <-time.After(2 * time.Minute):
			return fmt.Errorf("clone %d never ready", i)
		}
		s["clone to ready"] = time.Since(t0)
		samples = append(samples, s)
		fmt.Fprintf(os.Stderr, "clone %d: ready in %s\n", i+1, s["clone to ready"].Round(time.Millisecond))
	}
	time.Sleep(3 * time.Second)
	var total uint64
	for _, vm := range vms {
		total += pss(vm.Record.VMM)
	}
	fmt.Printf("\nClones of a running VM (snapshot took %s; %d clones, median)\n\n", snapTime.Round(time.Millisecond), clones)
	printTable(samples, []string{"checks", "record", "disks", "network", "host side before restore", "restore", "host total", "clone to ready"})
	cr := median(samples, "clone to ready")
	fmt.Printf("\ncold boot to ready (container started): %s\nclone to ready: %s (%.1f%% of cold)\n", coldReady.Round(time.Millisecond), cr.Round(time.Millisecond), 100*float64(cr)/float64(coldReady))
	fmt.Printf("\nPSS of the VMM processes: one VM %d MiB; %d clones total %d MiB (%.2fx one VM)\n", origPSS>>10, clones, total>>10, float64(total)/float64(origPSS))
	return nil
}

func pss(p state.Process) uint64 {
	m, err := p.Memory()
	if err != nil {
		return 0
	}
	return m.PSSKiB
}

// execRuns is how many exec round trips execBench times per kind.
var execRuns int

// execBench times `true` through the engine's exec (what `fcvm exec`
// does, without the process start of the fcvm binary), in the container
// and in the VM outside it, and prints p50 and p99 of each.
func execBench(ctx context.Context, e *engine.Engine, vm string) error {
	if execRuns == 0 {
		return nil
	}
	kinds := []struct {
		name string
		req  channel.ExecRequest
	}{
		{"exec in the container", channel.ExecRequest{Cmd: []string{"true"}}},
		{"exec --vm", channel.ExecRequest{Cmd: []string{"true"}, InVM: true}},
	}
	fmt.Printf("\nExec round trip of `true` (%d runs each, through the control socket and the channel)\n\n", execRuns)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tp50\tp99\t")
	var p50s []time.Duration
	for _, k := range kinds {
		var v []time.Duration
		for range execRuns {
			t0 := time.Now()
			x, err := e.Exec(ctx, vm, k.req)
			if err != nil {
				return err
			}
			code, err := x.Wait(io.Discard, io.Discard)
			x.Close()
			if err != nil || code != 0 {
				return fmt.Errorf("%s: exit %d, %v", k.name, code, err)
			}
			v = append(v, time.Since(t0))
		}
		slices.Sort(v)
		p50 := v[len(v)/2]
		p50s = append(p50s, p50)
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", k.name, fmtDur(p50), fmtDur(v[len(v)*99/100]))
	}
	tw.Flush()
	fmt.Printf("\ncontainer exec / --vm exec (p50): %.2fx\n", float64(p50s[0])/float64(p50s[1]))
	return nil
}

func median(samples []sample, key string) time.Duration {
	var v []time.Duration
	for _, s := range samples {
		if d, ok := s[key]; ok {
			v = append(v, d)
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func printTable(samples []sample, order []string) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tmedian\tmin\tmax\t")
	for _, k := range order {
		var v []time.Duration
		for _, s := range samples {
			if d, ok := s[k]; ok {
				v = append(v, d)
			}
		}
		if len(v) == 0 {
			continue
		}
		slices.Sort(v)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", k, fmtDur(v[len(v)/2]), fmtDur(v[0]), fmtDur(v[len(v)-1]))
	}
	tw.Flush()
	_ = strings.TrimSpace
}

func fmtDur(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}
