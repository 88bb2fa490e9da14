package rotatelog

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func size(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestWriterStaysUnderTwiceTheLimit writes a hundred times the limit, as a
// guest flooding its console does, and finds at most twice the limit on
// disk with the newest bytes kept.
func TestWriterStaysUnderTwiceTheLimit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	w, err := Create(p, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for i := range 10000 {
		line := fmt.Appendf(nil, "line %d\n", i)
		all.Write(line)
		if n, err := w.Write(line); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	cur, old := size(t, p), size(t, p+".1")
	if cur > 1000 || old > 1000 {
		t.Errorf("sizes %d and %d (.1): over the limit of 1000", cur, old)
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 2 {
		t.Errorf("%d files in the log's dir, want the log and its .1", len(ents))
	}
	got, err := Tail(p, 1500)
	if err != nil {
		t.Fatal(err)
	}
	if want := all.Bytes()[all.Len()-1500:]; !bytes.Equal(got, want) {
		t.Errorf("Tail(1500) = %q..., want the last 1500 bytes written %q...", got[:40], want[:40])
	}
}

func TestWriterKeepsEndOfAHugeWrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	w, err := Create(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("start\n"))
	big := bytes.Repeat([]byte("0123456789"), 100)
	if n, err := w.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write = %d, %v, want %d, nil", n, err, len(big))
	}
	w.Close()
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, big[900:]) {
		t.Errorf("log holds %q, want the last 100 bytes of the write", got)
	}
	if old, _ := os.ReadFile(p + ".1"); string(old) != "start\n" {
		t.Errorf(".1 holds %q, want what came before", old)
	}
}

func TestWriterCountsAnExistingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, bytes.Repeat([]byte("x"), 90), 0o600)
	w, err := Create(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("0123456789abc"))
	w.Close()
	if cur, old := size(t, p), size(t, p+".1"); cur != 13 || old != 90 {
		t.Errorf("sizes %d and %d (.1), want 13 and 90: the old content counts", cur, old)
	}
}

// TestWriterDropsAfterAFailure removes the log's directory: the rotation
// fails, writes go on succeeding for the writer's feeder, and Close tells.
func TestWriterDropsAfterAFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vm")
	os.Mkdir(dir, 0o700)
	p := filepath.Join(dir, "log")
	w, err := Create(p, 10)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("0123456789"))
	os.RemoveAll(dir)
	for range 3 {
		if n, err := w.Write([]byte("more")); n != 4 || err != nil {
			t.Fatalf("Write after a failure = %d, %v, want 4, nil", n, err)
		}
	}
	if err := w.Close(); err == nil {
		t.Error("Close after a failed rotation = nil")
	}
	if err := w.Close(); err == nil {
		t.Error("second Close forgot the failure")
	}
}

// TestMirrorFollowsRotation checks that a mirrored fd (the supervisor's
// stderr, where a crash report goes) writes into the current file, also
// after a rotation.
func TestMirrorFollowsRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "supervisor.log")
	w, err := Create(p, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Stands for fd 2.
	fd, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := w.Mirror(fd); err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, []byte("A"))
	w.Write([]byte("0123456789"))
	w.Write([]byte("x")) // rotates
	unix.Write(fd, []byte("B"))
	if got, _ := os.ReadFile(p); string(got) != "xB" {
		t.Errorf("log holds %q, want the mirrored write after the rotation", got)
	}
	if got, _ := os.ReadFile(p + ".1"); string(got) != "A0123456789" {
		t.Errorf(".1 holds %q", got)
	}
}

// TestTailReadsOnlyTheEnd takes the tail of a 64 GiB (sparse) log without
// reading it all: consoleTail runs on a console a guest filled.
func TestTailReadsOnlyTheEnd(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 30); err != nil {
		t.Fatalf("make a sparse file (the test needs a filesystem with holes): %v", err)
	}
	f.WriteAt([]byte("the end\n"), 64<<30)
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got, err := Tail(p, 4096)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4096 || !bytes.HasSuffix(got, []byte("the end\n")) {
		t.Errorf("Tail = %d bytes ending %q", len(got), got[max(len(got)-10, 0):])
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("Tail of 4 KiB allocated %d bytes", n)
	}
	if got, err := Tail(filepath.Join(t.TempDir(), "none"), 10); err != nil || len(got) != 0 {
		t.Errorf("Tail of a missing log = %q, %v", got, err)
	}
}

// TestPipeCopiesAChildsOutput runs a child that writes past the limit
// into a Pipe: the log holds its last output, and Drain returns once the
// child is gone.
func TestPipeCopiesAChildsOutput(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	w, err := Create(p, 4096)
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := NewPipe(w)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done`)
	cmd.Stdout = pipe.W
	runInto(t, cmd, pipe, p)
}

// runInto runs cmd, which writes 2000 numbered lines through pipe into a
// log at p capped at 4096 bytes, and checks that the log ends with the last
// line and kept to its cap.
func runInto(t *testing.T, cmd *exec.Cmd, pipe *Pipe, p string) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pipe.W.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := pipe.Drain(); err != nil {
		t.Fatal(err)
	}
	got, err := Tail(p, 10)
	if err != nil || string(got) != "line 1999\n" {
		t.Errorf("log ends %q, %v", got, err)
	}
	if cur, old := size(t, p), size(t, p+".1"); cur > 4096 || old > 4096 {
		t.Errorf("sizes %d and %d (.1): over the limit of 4096", cur, old)
	}
}

// TestPipeDrainIsBounded leaves the pipe open (a descendant that kept
// it): Drain gives up after its grace period instead of hanging.
// TestFIFOCopiesWritersByName: a child that opens the log by its FIFO's
// name (as Firecracker opens the path PUT /logger gives it) is copied as
// the one that writes to W is, and Drain removes the FIFO.
func TestFIFOCopiesWritersByName(t *testing.T) {
	dir := t.TempDir()
	p, fifo := filepath.Join(dir, "vmm.log"), filepath.Join(dir, "vmm.log.fifo")
	w, err := Create(p, 4096)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(fifo, []byte("stale"), 0o600) // left by a crashed run
	pipe, err := NewFIFO(fifo, w, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `echo on-stderr >&2; i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done >>"$1"`, "sh", fifo)
	cmd.Stderr = pipe.W
	runInto(t, cmd, pipe, p)
	if _, err := os.Lstat(fifo); !os.IsNotExist(err) {
		t.Errorf("FIFO left behind: %v", err)
	}
}

func TestPipeDrainIsBounded(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "console.log"), 0)
	if err != nil {
		t.Fatal(err)
	}
	pipe, err := NewPipe(w)
	if err != nil {
		t.Fatal(err)
	}
	held, err := unix.Dup(int(pipe.W.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(held)
	start := time.Now()
	if err := pipe.Drain(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < drainGrace || d > drainGrace+time.Second {
		t.Errorf("Drain with the pipe held open took %s, want about %s", d, drainGrace)
	}
}
