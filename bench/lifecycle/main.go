// Command lifecycle measures what a user of a running VM waits for: the
// round trip of `fcvm exec VM true` (in the container, through podman
// exec, and in the VM with --vm), and how fast container output reaches
// `fcvm logs -f`.
//
// It boots one VM with the fcvm binary it is given and removes it at the
// end:
//
//	CGO_ENABLED=0 go build -o /tmp/ ./cmd/fcvm ./cmd/fc-agent
//	go run ./bench/lifecycle -fcvm /tmp/fcvm -image oci-archive:/path/busybox.tar
//
// The image needs sh, head, yes and sleep (busybox). Set FCVM_DATA_DIR and
// FCVM_RUNTIME_DIR as for fcvm itself.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

func main() {
	fcvm := flag.String("fcvm", "fcvm", "the fcvm binary")
	image := flag.String("image", "", "image reference with busybox (required)")
	n := flag.Int("n", 30, "execs of each kind")
	logMiB := flag.Int("log-mib", 16, "MiB of container output for the log throughput")
	flag.Parse()
	if *image == "" {
		fmt.Fprintln(os.Stderr, "lifecycle: give -image, e.g. -image oci-archive:/tmp/busybox.tar")
		os.Exit(2)
	}
	if err := run(*fcvm, *image, *n, *logMiB); err != nil {
		fmt.Fprintf(os.Stderr, "lifecycle: %v\n", err)
		os.Exit(1)
	}
}

func run(fcvm, image string, n, logMiB int) error {
	ctx := context.Background()
	name := fmt.Sprintf("bench-lifecycle-%d", os.Getpid())
	size := logMiB << 20
	// The container gives logs -f time to start (a go signal through
	// exec would measure podman exec's cleanup competing for the guest's
	// CPU), then writes size bytes of 64-byte lines.
	script := fmt.Sprintf(`sleep 5; yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c %d; sleep 100000`, size)
	t0 := time.Now()
	// Removed whatever happens, a failed start included.
	defer exec.Command(fcvm, "rm", "-f", name).Run()
	if out, err := exec.CommandContext(ctx, fcvm, "run", "-d", "--network", "none", "--name", name, image, "sh", "-c", script).CombinedOutput(); err != nil {
		return fmt.Errorf("run -d: %v: %s", err, out)
	}
	boot := time.Since(t0)

	execOnce := func(args ...string) (time.Duration, error) {
		start := time.Now()
		out, err := exec.CommandContext(ctx, fcvm, append([]string{"exec"}, args...)...).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("exec %v: %v: %s", args, err, out)
		}
		return time.Since(start), nil
	}
	// Log throughput: follow, then let the container write.
	cmd := exec.CommandContext(ctx, fcvm, "logs", "-f", name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	buf := make([]byte, 256<<10)
	got := 0
	var first time.Time
	for got < size {
		k, err := out.Read(buf)
		if k > 0 && first.IsZero() {
			first = time.Now()
		}
		got += k
		if err == io.EOF {
			return fmt.Errorf("logs -f ended after %d of %d bytes", got, size)
		}
		if err != nil {
			return err
		}
	}
	took := time.Since(first)
	var rows [][]string
	for _, kind := range []struct {
		what string
		args []string
	}{
		{"exec true (container, podman exec)", []string{name, "true"}},
		{"exec --vm true (VM)", []string{"--vm", name, "true"}},
	} {
		var ds []time.Duration
		for range n {
			d, err := execOnce(kind.args...)
			if err != nil {
				return err
			}
			ds = append(ds, d)
		}
		slices.Sort(ds)
		rows = append(rows, []string{kind.what, fmt.Sprint(n), ms(ds[len(ds)/2]), ms(ds[min(len(ds)-1, len(ds)*99/100)]), ms(ds[0])})
	}

	fmt.Printf("boot to running (run -d): %s\n\n", boot.Round(time.Millisecond))
	fmt.Printf("%-36s %5s %10s %10s %10s\n", "round trip", "n", "median", "p99", "min")
	for _, r := range rows {
		fmt.Printf("%-36s %5s %10s %10s %10s\n", r[0], r[1], r[2], r[3], r[4])
	}
	fmt.Printf("\n%-36s %5s %10s %10s\n", "log throughput", "MiB", "seconds", "MiB/s")
	fmt.Printf("%-36s %5d %10.2f %10.1f\n", "container output to logs -f", logMiB, took.Seconds(), float64(size)/(1<<20)/took.Seconds())
	if !bytes.HasPrefix(buf, []byte("0123")) && !strings.Contains(string(buf[:64]), "abcde") {
		return fmt.Errorf("unexpected log content %q", buf[:64])
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
