package firecracker

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/rotatelog"
	"github.com/fcvm/fcvm/internal/vmm"
)

// Process handling against the stand-in: these prove the process code, not
// that a VM boots.

func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie has exited; it only awaits its reaper.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after %v", pid, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSocketWaitTimeout(t *testing.T) {
	dir := t.TempDir()
	d, _ := standinDriver(t, "nosocket", Options{SocketTimeout: time.Second})
	start := time.Now()
	_, err := d.StartMachine(t.Context(), minimalConfig(dir))
	if err == nil {
		t.Fatal("start succeeded without an API socket")
	}
	if el := time.Since(start); el < time.Second || el > 6*time.Second {
		t.Errorf("gave up after %v, want about 1s", el)
	}
	for _, want := range []string{"not ready after 1s", "stand-in: not creating the API socket"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Nothing left running: the stand-in would sleep an hour.
	out, _ := exec.Command("pgrep", "-P", strconv.Itoa(os.Getpid())).Output()
	if len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("children left running: %s", out)
	}
}

func TestEarlyExitReportsLog(t *testing.T) {
	d, _ := standinDriver(t, "exit", Options{})
	_, err := d.StartMachine(t.Context(), minimalConfig(t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "exited before its API socket") || !strings.Contains(err.Error(), "boom: cannot open kernel") {
		t.Fatalf("want the exit and the log's last line, got: %v", err)
	}
}

func TestConsoleAndLogCapture(t *testing.T) {
	dir := t.TempDir()
	d, _ := standinDriver(t, "api", Options{})
	cfg := minimalConfig(dir)
	m, err := d.StartMachine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopMachine(t, m)
	console, _ := os.ReadFile(cfg.ConsoleLog)
	if !strings.Contains(string(console), "stand-in serial console") {
		t.Errorf("console log %q lacks the process's stdout", console)
	}
	log, _ := os.ReadFile(m.LogPath())
	if !strings.Contains(string(log), "stand-in log: serving the API") {
		t.Errorf("firecracker log %q lacks the process's stderr", log)
	}
}

// TestConsoleLogIsCapped has the stand-in write 20 MiB to its serial
// console, as a flooding guest does: the console log keeps the newest
// output within its cap, complete once Wait returns.
func TestConsoleLogIsCapped(t *testing.T) {
	dir := t.TempDir()
	d, _ := standinDriver(t, "api", Options{})
	t.Setenv("FCVM_TEST_CONSOLE_FLOOD", strconv.Itoa(20<<20))
	cfg := minimalConfig(dir)
	m, err := d.StartMachine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopMachine(t, m)
	for _, p := range []string{cfg.ConsoleLog, cfg.ConsoleLog + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > rotatelog.DefaultLimit {
			t.Errorf("%s holds %d bytes, over the cap of %d", p, st.Size(), rotatelog.DefaultLimit)
		}
	}
	want := "stand-in serial console: no VM here\n"
	if end, err := rotatelog.Tail(cfg.ConsoleLog, int64(len(want))); err != nil || string(end) != want {
		t.Errorf("console log ends %q, %v: want the last line written", end, err)
	}
}

// TestFirecrackerLogIsCapped has the stand-in log 20 MiB through the
// logger it is given (a FIFO), as a VMM made to log by its guest would:
// the log keeps the newest lines within its cap, outside any jail.
func TestFirecrackerLogIsCapped(t *testing.T) {
	dir := t.TempDir()
	d, _ := standinDriver(t, "api", Options{})
	t.Setenv("FCVM_TEST_LOG_FLOOD", strconv.Itoa(20<<20))
	cfg := minimalConfig(dir)
	m, err := d.StartMachine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopMachine(t, m)
	if m.LogPath() != filepath.Join(cfg.RuntimeDir, logName) {
		t.Errorf("log at %s, want it in the runtime dir", m.LogPath())
	}
	for _, p := range []string{m.LogPath(), m.LogPath() + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > rotatelog.DefaultLimit {
			t.Errorf("%s holds %d bytes, over the cap of %d", p, st.Size(), rotatelog.DefaultLimit)
		}
	}
	want := "stand-in logger: last line\n"
	if end, err := rotatelog.Tail(m.LogPath(), int64(len(want))); err != nil || string(end) != want {
		t.Errorf("firecracker log ends %q, %v: want the last line logged", end, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.RuntimeDir, logFIFOName)); !os.IsNotExist(err) {
		t.Errorf("log FIFO left behind: %v", err)
	}
}

func TestStopGracePeriod(t *testing.T) {
	t.Run("guest powers off", func(t *testing.T) {
		d, rec := standinDriver(t, "api", Options{})
		m, err := d.StartMachine(t.Context(), minimalConfig(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := m.Stop(t.Context(), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("stop took %v though the process exited on Ctrl-Alt-Del", el)
		}
		if err := m.Wait(); err != nil {
			t.Errorf("wait after stop: %v", err)
		}
		calls := readRecord(t, rec)
		if bodyOf(t, calls[len(calls)-1:], "PUT /actions")["action_type"] != "SendCtrlAltDel" {
			t.Errorf("last call %v", calls[len(calls)-1])
		}
		// Stop is idempotent.
		if err := m.Stop(t.Context(), time.Second); err != nil {
			t.Errorf("second stop: %v", err)
		}
	})
	t.Run("guest ignores it", func(t *testing.T) {
		d, _ := standinDriver(t, "api", Options{})
		t.Setenv("FCVM_TEST_IGNORE_CAD", "1")
		m, err := d.StartMachine(t.Context(), minimalConfig(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		const grace = 400 * time.Millisecond
		start := time.Now()
		if err := m.Stop(t.Context(), grace); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < grace || el > grace+5*time.Second {
			t.Errorf("killed after %v, want just after the %v grace", el, grace)
		}
		if alive(m.PID()) {
			t.Error("process alive after Stop returned")
		}
	})
	t.Run("zero grace kills", func(t *testing.T) {
		d, rec := standinDriver(t, "api", Options{})
		m, err := d.StartMachine(t.Context(), minimalConfig(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		n := len(readRecord(t, rec))
		if err := m.Stop(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
		if got := len(readRecord(t, rec)); got != n {
			t.Errorf("zero grace still sent %d API calls", got-n)
		}
	})
}

// TestPdeathsig: a supervisor killed outright takes its VMM down. The
// supervisor is a re-executed test binary that starts a machine and exits.
func TestPdeathsig(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], dir)
	cmd.Env = append(os.Environ(), standinEnv+"=parent")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("parent: %v\n%s", err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("parent printed %q", out)
	}
	waitGone(t, pid, 5*time.Second)
}

// newNetNS makes a network namespace bound at a file, as fcvm's network
// code does, and removes it when the test ends.
func newNetNS(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error)
	go func() {
		// The thread is left in the new namespace, so it must die with
		// this goroutine: never unlocked.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
	return path
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestNetNS(t *testing.T) {
	ns := newNetNS(t)
	dir := t.TempDir()
	cfg := minimalConfig(dir)
	cfg.NetNS = ns
	d, _ := standinDriver(t, "api", Options{})
	m, err := d.StartMachine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stopMachine(t, m)
	if got, want := nsInode(t, "/proc/"+strconv.Itoa(m.PID())+"/ns/net"), nsInode(t, ns); got != want {
		t.Errorf("VMM in netns %d, want %d", got, want)
	}
	// The namespace stayed on the VMM's own locked thread: goroutines
	// that the scheduler moves between threads never find themselves in it.
	vmNS := nsInode(t, ns)
	for i := 0; i < 50; i++ {
		if nsInode(t, "/proc/thread-self/ns/net") == vmNS {
			t.Fatal("a scheduler thread is in the VM's netns")
		}
		runtime.Gosched()
	}
}

// TestBadInput: a config the spec (or the driver) refuses fails before
// any process starts, naming the field.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	d, rec := standinDriver(t, "api", Options{})
	for _, tc := range []struct {
		name  string
		edit  func(*Options, *vmm.Config)
		field string
	}{
		{"zero vcpus", func(_ *Options, c *vmm.Config) { c.VCPUs = 0 }, "vcpu_count"},
		{"64 vcpus", func(_ *Options, c *vmm.Config) { c.VCPUs = 64 }, "vcpu_count"},
		{"bad log level", func(o *Options, _ *vmm.Config) { o.LogLevel = "Loud" }, "level"},
		{"negative rate", func(o *Options, _ *vmm.Config) {
			o.DiskRateLimits = map[string]*RateLimiter{"upper": {Bandwidth: &TokenBucket{Size: -5}}}
		}, "rate_limiter.bandwidth.size"},
		{"config file, bad level", func(o *Options, _ *vmm.Config) {
			o.ConfigFile = true
			o.LogLevel = "x"
		}, "logger.level"},
		{"disk id", func(_ *Options, c *vmm.Config) { c.Disks[1].ID = "up per" }, "Disks[1].ID"},
		{"no tap", func(_ *Options, c *vmm.Config) { c.Net.TAP = "" }, "Net.TAP"},
		{"bad mac", func(_ *Options, c *vmm.Config) { c.Net.MAC = "06:00:ac" }, "Net.MAC"},
		{"no memory", func(_ *Options, c *vmm.Config) { c.MemoryMiB = 0 }, "MemoryMiB"},
		{"plan without net", func(o *Options, c *vmm.Config) { o.BootPlan = testPlan; c.Net = nil }, "BootPlan"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := d.opts
			cfg := fullConfig(t, dir)
			tc.edit(&o, &cfg)
			_, err := New(o).StartMachine(t.Context(), cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error does not name %s: %v", tc.field, err)
			}
			var se *SpecError
			if errors.As(err, &se) && se.Field != tc.field {
				t.Errorf("SpecError.Field %q, want %q", se.Field, tc.field)
			}
			if _, err := os.Stat(rec); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a process started (record exists: %v)", err)
			}
			if _, err := os.Stat(filepath.Join(dir, logName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("left a log file behind")
			}
		})
	}
}
