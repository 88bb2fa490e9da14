package state

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestSelfAlive(t *testing.T) {
	p := Self()
	if p.PID != os.Getpid() || p.StartTime == 0 {
		t.Fatalf("Self() = %+v, want our PID with a start time", p)
	}
	if !p.Alive() {
		t.Fatal("Self().Alive() = false")
	}
	if (Process{PID: p.PID, StartTime: p.StartTime + 1}).Alive() {
		t.Error("a start time mismatch is alive")
	}
	if (Process{PID: p.PID}).Alive() {
		t.Error("an unknown start time is alive")
	}
	if (Process{}).Alive() {
		t.Error("the zero Process is alive")
	}
}

func TestAliveExitedChild(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := ProcessOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Alive() {
		t.Fatal("running child is not alive")
	}
	cmd.Process.Kill()
	// Until it is reaped the child is a zombie: exited, PID still taken.
	deadline := time.Now().Add(5 * time.Second)
	for p.Alive() {
		if time.Now().After(deadline) {
			t.Fatal("killed child (a zombie) is still alive")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := ProcessOf(p.PID); !errors.Is(err, ErrNoProcess) {
		t.Errorf("ProcessOf(zombie) = %v, want ErrNoProcess", err)
	}
	cmd.Wait()
	if p.Alive() {
		t.Error("reaped child is alive")
	}
	if _, err := ProcessOf(p.PID); !errors.Is(err, ErrNoProcess) {
		t.Errorf("ProcessOf(reaped) = %v, want ErrNoProcess", err)
	}
}

// TestAliveReusedPID makes the kernel hand a dead child's PID to a new
// process and checks that the record of the first is not taken for the
// second.
func TestAliveReusedPID(t *testing.T) {
	old, _ := reusedPID(t)
	now, err := ProcessOf(old.PID)
	if err != nil {
		t.Fatalf("PID %d reused but ProcessOf fails: %v", old.PID, err)
	}
	if now.StartTime == old.StartTime {
		t.Fatalf("reused PID has the same start time %d", now.StartTime)
	}
	if old.Alive() {
		t.Errorf("%v is alive though PID %d now belongs to %v", old, old.PID, now)
	}
	if !now.Alive() {
		t.Errorf("%v (the new process) is not alive", now)
	}
}

// TestSignalLive: a record that matches its process signals it.
func TestSignalLive(t *testing.T) {
	cmd, p := startSleep(t)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal(%v): %v", p, err)
	}
	wantKilledBy(t, cmd, syscall.SIGTERM)
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Signal after exit = %v, want ErrNoProcess", err)
	}
	if err := (Process{}).Signal(syscall.SIGTERM); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Signal of the zero Process = %v, want ErrNoProcess", err)
	}
}

// TestSignalWrongStartTime: a record with the PID of a live process but
// another start time (what a record of a process whose PID was reused
// looks like) sends nothing. The SIGKILL it would send is detected by
// the process then dying of the SIGTERM sent after it.
func TestSignalWrongStartTime(t *testing.T) {
	cmd, p := startSleep(t)
	for _, stale := range []Process{
		{PID: p.PID, StartTime: p.StartTime - 1},
		{PID: p.PID, StartTime: p.StartTime + 1},
		{PID: p.PID},
	} {
		if err := stale.Signal(syscall.SIGKILL); !errors.Is(err, ErrNoProcess) {
			t.Errorf("Signal(%v) with %v running = %v, want ErrNoProcess", stale, p, err)
		}
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wantKilledBy(t, cmd, syscall.SIGTERM)
}

// TestSignalReusedPID: the record of an exited process whose PID the
// kernel gave to a new one does not signal the new one.
func TestSignalReusedPID(t *testing.T) {
	old, second := reusedPID(t)
	if err := old.Signal(syscall.SIGKILL); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Signal(%v) after its PID was reused = %v, want ErrNoProcess", old, err)
	}
	second.Process.Signal(syscall.SIGTERM)
	wantKilledBy(t, second, syscall.SIGTERM)
}

// startSleep starts a child that waits to be killed, and its record.
func startSleep(t *testing.T) (*exec.Cmd, Process) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p, err := ProcessOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, p
}

// wantKilledBy waits for cmd and checks that sig, the first signal it
// got, ended it.
func wantKilledBy(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("wait: %v, want death by %v", err, sig)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != sig {
		t.Errorf("child ended with %v, want death by %v (another signal reached it)", ee, sig)
	}
}

// reusedPID starts a child, records it, kills it, and makes the kernel hand
// its PID to a second child (through ns_last_pid, which needs root). It
// returns the first child's record and the second child, killed at cleanup.
func reusedPID(t *testing.T) (Process, *exec.Cmd) {
	t.Helper()
	first := exec.Command("sleep", "60")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	old, err := ProcessOf(first.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	first.Process.Kill()
	first.Wait()
	// Start times have clock-tick resolution: make sure the second
	// process starts in a later tick, as any real reuse does.
	time.Sleep(50 * time.Millisecond)

	var second *exec.Cmd
	for try := 0; try < 200 && second == nil; try++ {
		// Other processes on the machine may take the PID first: retry.
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(old.PID-1)), 0); err != nil {
			t.Fatalf("force PID reuse (needs root): %v", err)
		}
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if c.Process.Pid == old.PID {
			second = c
			break
		}
		c.Process.Kill()
		c.Wait()
	}
	if second == nil {
		t.Fatalf("could not get PID %d reused in 200 tries", old.PID)
	}
	t.Cleanup(func() { second.Process.Kill(); second.Wait() })
	return old, second
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in    string
		state byte
		start uint64
		bad   bool
	}{
		{in: "1234 (sleep) S 1 1234 1234 0 -1 4194304 87 0 0 0 0 0 0 0 20 0 1 0 98765 8744960 131 18446744073709551615", state: 'S', start: 98765},
		{in: "1 (a) b) c) R 0 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 7 1 1 1 1 1 1", state: 'R', start: 7},
		{in: "1 (x y ) Z 0 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 42", state: 'Z', start: 42},
		{in: "1 (short) S 1 2 3", bad: true},
		{in: "no parens S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20", bad: true},
		{in: "1 (x) S 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 -5", bad: true},
		{in: "1 (x) SS 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 5", bad: true},
	} {
		got, err := parseStat([]byte(tc.in))
		if tc.bad {
			if err == nil {
				t.Errorf("parseStat(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got.State != tc.state || got.StartTime != tc.start {
			t.Errorf("parseStat(%q) = %+v, %v; want state %c start %d", tc.in, got, err, tc.state, tc.start)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("1 (a) b) c) R 0 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 7 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseStat(b) // must not panic
	})
}

func TestParseSmapsRollup(t *testing.T) {
	in := `55d0c0a4b000-7ffd8a3f6000 ---p 00000000 00:00 0                          [rollup]
Rss:               12345 kB
Pss:                6789 kB
Pss_Anon:            100 kB
Shared_Clean:       4000 kB
`
	got, err := parseSmapsRollup([]byte(in))
	if err != nil || got != (Memory{RSSKiB: 12345, PSSKiB: 6789}) {
		t.Errorf("parseSmapsRollup = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "Rss: 1 kB\n", "Rss: x kB\nPss: 1 kB\n", "Rss: 1 MB\nPss: 1 kB\n"} {
		if m, err := parseSmapsRollup([]byte(bad)); err == nil {
			t.Errorf("parseSmapsRollup(%q) = %+v, want an error", bad, m)
		}
	}
}

func FuzzParseSmapsRollup(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/smaps_rollup"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("Rss: 1 kB\nPss: 2 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseSmapsRollup(b)
	})
}

func TestMemorySelf(t *testing.T) {
	m, err := Self().Memory()
	if err != nil {
		t.Fatal(err)
	}
	if m.RSSKiB == 0 || m.PSSKiB == 0 || m.PSSKiB > m.RSSKiB {
		t.Errorf("Self().Memory() = %+v, want 0 < PSS <= RSS", m)
	}
	if _, err := (Process{PID: os.Getpid(), StartTime: 1}).Memory(); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Memory of a dead process = %v, want ErrNoProcess", err)
	}
}
