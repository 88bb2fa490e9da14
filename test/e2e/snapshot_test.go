package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/imagetest"
	"github.com/fcvm/fcvm/internal/uffd/uffdtest"
)

// counterScript keeps a counter in memory (tmpfs), so a clone's value says
// whether it got the snapshot's memory, and serves it over HTTP (a CGI
// script under busybox httpd) at /cgi-bin/c. While /dev/shm/hold exists the
// counter stands still and its value is in /dev/shm/held: a test holds it
// before a snapshot so that the snapshot's value is known exactly, whatever
// the time between reading it and pausing the VM.
const counterScript = `mkdir -p /www/cgi-bin
printf '#!/bin/sh\necho Content-Type: text/plain\necho\ncat /dev/shm/c\n' > /www/cgi-bin/c
chmod +x /www/cgi-bin/c
(i=0; while true; do if [ -e /dev/shm/hold ]; then echo $i > /dev/shm/held; else rm -f /dev/shm/held; i=$((i+1)); echo $i > /dev/shm/c; fi; sleep 1; done) &
exec httpd -f -p 80 -h /www`

// freePort returns a TCP port on 127.0.0.1 that is free now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// httpCounter reads the counter a VM serves on a published host port.
func httpCounter(t *testing.T, port int) int {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/cgi-bin/c", port))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return n
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no counter on port %d: %v", port, err)
		}
		time.Sleep(time.Second)
	}
}

// startDetached runs `fcvm run -d` or `fcvm snapshot run -d` and returns
// the VM's ID, removing the VM when the test ends.
func startDetached(t *testing.T, args ...string) string {
	t.Helper()
	r := fcvm(t, args...)
	if r.code != 0 {
		t.Fatalf("start: %s", r)
	}
	id := strings.TrimSpace(r.stdout)
	t.Cleanup(func() { fcvm(t, "rm", "-f", id) })
	return id
}

// execOut runs fcvm exec and returns trimmed stdout, failing on error.
func execOut(t *testing.T, vm string, cmd ...string) string {
	t.Helper()
	r := fcvm(t, append([]string{"exec", vm}, cmd...)...)
	if r.code != 0 {
		t.Fatalf("exec %v in %s: %s", cmd, vm, r)
	}
	return strings.TrimSpace(r.stdout)
}

// holdCounter stops counterScript's counter in vm and returns the value it
// stands at.
func holdCounter(t *testing.T, vm string) int {
	t.Helper()
	execOut(t, vm, "touch", "/dev/shm/hold")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := fcvm(t, "exec", vm, "cat", "/dev/shm/held")
		if n, err := strconv.Atoi(strings.TrimSpace(r.stdout)); r.code == 0 && err == nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter in %s not held: %s", vm, r)
		}
		time.Sleep(time.Second)
	}
}

// releaseCounter lets a held counter go on and waits until it has moved
// past from.
func releaseCounter(t *testing.T, vm string, port, from int) {
	t.Helper()
	execOut(t, vm, "rm", "/dev/shm/hold")
	deadline := time.Now().Add(2 * time.Minute)
	for httpCounter(t, port) <= from {
		if time.Now().After(deadline) {
			t.Fatalf("counter in %s stays at %d after release", vm, from)
		}
		time.Sleep(time.Second)
	}
}

// counter reads a VM's in-memory counter, waiting until it exists.
func counter(t *testing.T, vm string) int {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := fcvm(t, "exec", vm, "cat", "/dev/shm/c")
		if n, err := strconv.Atoi(strings.TrimSpace(r.stdout)); r.code == 0 && err == nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("no counter in %s: %s", vm, r)
		}
		time.Sleep(time.Second)
	}
}

func TestSnapshotClones(t *testing.T) {
	needSetup(t)
	ref := busyboxArchive(t, imagetest.Options{})
	origPort := freePort(t)
	orig := startDetached(t, "run", "-d", "--name", uniqueName(t, "orig"), "-p", fmt.Sprintf("127.0.0.1:%d:80", origPort), ref, "sh", "-c", counterScript)
	for httpCounter(t, origPort) < 3 {
		time.Sleep(time.Second)
	}
	// Disk state before the snapshot: every clone must see it.
	execOut(t, orig, "sh", "-c", "echo before > /before")
	// The counter stands still from here to the snapshot, so every clone
	// must start at exactly this value.
	atSnapshot := holdCounter(t, orig)

	tag := uniqueName(t, "tag")
	if r := fcvm(t, "snapshot", "create", orig, "--tag", tag); r.code != 0 {
		t.Fatalf("snapshot create: %s", r)
	}
	t.Cleanup(func() { fcvm(t, "snapshot", "rm", "-f", tag) })

	t.Run("tag in use", func(t *testing.T) {
		if r := fcvm(t, "snapshot", "create", orig, "--tag", tag); r.code == 0 || !strings.Contains(r.stderr, "in use") {
			t.Errorf("second create with the same tag: %s", r)
		}
	})

	clones := make([]string, 3)
	ports := make([]int, len(clones))
	for i := range clones {
		ports[i] = freePort(t)
		clones[i] = startDetached(t, "snapshot", "run", tag, "-d", "--name", uniqueName(t, "clone"+strconv.Itoa(i)), "-p", fmt.Sprintf("127.0.0.1:%d:80", ports[i]))
	}
	for i, c := range clones {
		// Each clone answers on its own published port with the
		// snapshot's counter, and carries on from there once released.
		if n := httpCounter(t, ports[i]); n != atSnapshot {
			t.Errorf("clone %d counter %d, want the snapshot's %d", i, n, atSnapshot)
		}
		releaseCounter(t, c, ports[i], atSnapshot)
		if got := execOut(t, c, "cat", "/before"); got != "before" {
			t.Errorf("clone %d misses the snapshot's disk state: %q", i, got)
		}
		// Diverge: each clone writes its own memory and disk.
		execOut(t, c, "sh", "-c", "echo clone"+strconv.Itoa(i)+" > /dev/shm/who; echo clone"+strconv.Itoa(i)+" > /who")
	}
	for i, c := range clones {
		want := "clone" + strconv.Itoa(i)
		if got := execOut(t, c, "cat", "/dev/shm/who", "/who"); got != want+"\n"+want {
			t.Errorf("clone %d sees %q, want its own writes only", i, got)
		}
	}
	// The original keeps running and sees none of the clones' writes.
	if n := httpCounter(t, origPort); n != atSnapshot {
		t.Errorf("original counter moved while held: %d, want %d", n, atSnapshot)
	}
	releaseCounter(t, orig, origPort, atSnapshot)
	if r := fcvm(t, "exec", orig, "cat", "/who"); r.code == 0 {
		t.Errorf("a clone's disk write reached the original: %s", r)
	}
	// A detached clone's supervisor logs to its VM's dir, as a detached
	// cold boot's does.
	if _, err := os.Stat(filepath.Join(dataDir, "vms", clones[0], "supervisor.log")); err != nil {
		t.Errorf("detached clone has no supervisor.log: %v", err)
	}
	// Logs of a clone are its own.
	if r := fcvm(t, "logs", clones[0]); r.code != 0 {
		t.Errorf("logs of a clone: %s", r)
	}

	t.Run("clone after the original is removed", func(t *testing.T) {
		if r := fcvm(t, "rm", "-f", orig); r.code != 0 {
			t.Fatalf("rm original: %s", r)
		}
		c := startDetached(t, "snapshot", "run", tag, "-d")
		if n := counter(t, c); n != atSnapshot {
			t.Errorf("late clone counter %d, want the snapshot's %d", n, atSnapshot)
		}
		if r := fcvm(t, "exec", c, "cat", "/who"); r.code == 0 {
			t.Errorf("another clone's disk write reached a new clone: %s", r)
		}
	})

	t.Run("rm refused while in use", func(t *testing.T) {
		if r := fcvm(t, "snapshot", "rm", tag); r.code == 0 || !strings.Contains(r.stderr, "in use") {
			t.Errorf("snapshot rm with live clones: %s", r)
		}
	})

	t.Run("ls", func(t *testing.T) {
		r := fcvm(t, "snapshot", "ls", "--json")
		if r.code != 0 || !strings.Contains(r.stdout, `"tag": "`+tag+`"`) {
			t.Errorf("snapshot ls: %s", r)
		}
	})
}

func TestSnapshotBadInput(t *testing.T) {
	needSetup(t)
	ref := busyboxArchive(t, imagetest.Options{})
	stopped := uniqueName(t, "stopped")
	if r := fcvm(t, "run", "--name", stopped, ref, "true"); r.code != 0 {
		t.Fatalf("run: %s", r)
	}
	t.Cleanup(func() { fcvm(t, "rm", "-f", stopped) })
	cases := []struct {
		name, want string
		args       []string
	}{
		{"not running", "not running", []string{"snapshot", "create", stopped, "--tag", uniqueName(t, "x")}},
		{"missing snapshot", "not found", []string{"snapshot", "run", "nosuch-snapshot"}},
		{"bad tag", "tag", []string{"snapshot", "create", stopped, "--tag", "../evil"}},
		{"not a memory server", "not a memory server", []string{"snapshot", "run", "--serve", strconv.Itoa(os.Getpid())}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := fcvm(t, c.args...)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("want an error mentioning %q: %s", c.want, r)
			}
		})
	}

	// A corrupt snapshot and a clone with another driver need a real one.
	orig := startDetached(t, "run", "-d", ref, "sleep", "1000")
	tag := uniqueName(t, "corrupt")
	if r := fcvm(t, "snapshot", "create", orig, "--tag", tag); r.code != 0 {
		t.Fatalf("snapshot create: %s", r)
	}
	t.Cleanup(func() { fcvm(t, "snapshot", "rm", "-f", tag) })
	t.Run("other driver", func(t *testing.T) {
		r := fcvm(t, "snapshot", "run", tag, "--vmm", "firecracker")
		if r.code == 0 || !strings.Contains(r.stderr, "same driver") {
			t.Errorf("clone with another driver: %s", r)
		}
	})
	t.Run("corrupt", func(t *testing.T) {
		before := len(list(t))
		state := filepath.Join(dataDir, "snapshots", tag, "vmstate")
		if err := os.Truncate(state, 100); err != nil {
			t.Fatal(err)
		}
		r := fcvm(t, "snapshot", "run", tag)
		if r.code == 0 || !strings.Contains(r.stderr, "corrupt") {
			t.Errorf("clone of a corrupt snapshot: %s", r)
		}
		if after := len(list(t)); after != before {
			t.Errorf("failed clone left a record")
		}
	})
}

// TestSnapshotServeStopsClones: SIGTERM to a memory server stops the
// processes it serves and removes its socket. A Firecracker-protocol client
// (this test binary, re-executed) stands in for a clone's VMM, since
// Firecracker cannot run here.
func TestSnapshotServeStopsClones(t *testing.T) {
	needSetup(t)
	ref := busyboxArchive(t, imagetest.Options{})
	orig := startDetached(t, "run", "-d", ref, "sleep", "1000")
	tag := uniqueName(t, "serve")
	if r := fcvm(t, "snapshot", "create", orig, "--tag", tag); r.code != 0 {
		t.Fatalf("snapshot create: %s", r)
	}
	t.Cleanup(func() { fcvm(t, "snapshot", "rm", "-f", tag) })

	serve := fcvmCmd(t.Context(), dataDir, "snapshot", "serve", tag)
	out, err := serve.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var serr strings.Builder
	serve.Stderr = &serr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var socket string
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "Socket: "); ok {
			socket = s
			break
		}
	}
	if socket == "" {
		serve.Process.Kill()
		t.Fatalf("serve printed no socket; stderr: %s", serr.String())
	}
	exe, _ := os.Executable()
	mem := filepath.Join(dataDir, "snapshots", tag, "mem.ram")
	clones := make([]*uffdtest.Helper, 2)
	for i := range clones {
		h, err := uffdtest.StartHelper(exe, uffdtest.Job{
			Socket:     socket,
			MemFile:    mem,
			Regions:    []uffdtest.RegionSpec{{Size: 8 << 20, Offset: 0, PageSize: 4096}},
			StallAfter: 16,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.WaitLine("stalled", time.Minute); err != nil {
			t.Fatal(err)
		}
		clones[i] = h
	}
	serve.Process.Signal(syscall.SIGTERM)
	var wg sync.WaitGroup
	for i, h := range clones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := h.Cmd.Wait()
			var ee *exec.ExitError
			if err == nil || !asExit(err, &ee) || ee.Sys().(syscall.WaitStatus).Signaled() == false {
				t.Errorf("clone %d was not stopped by the server: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if err := serve.Wait(); err != nil {
		t.Errorf("serve exit: %v; stderr: %s", err, serr.String())
	}
	if _, err := os.Stat(socket); err == nil {
		t.Errorf("socket %s left behind", socket)
	}
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// TestTenClonesShareMemory starts ten clones at once and compares the
// total PSS of their VMM processes with one VM's: the clones map the
// snapshot's memory privately, so pages they only read are shared.
func TestTenClonesShareMemory(t *testing.T) {
	needSetup(t)
	ref := busyboxArchive(t, imagetest.Options{})
	orig := startDetached(t, "run", "-d", "--network", "none", "--memory", "256", ref, "sh", "-c", "echo 1 > /dev/shm/c; exec sleep 100000")
	counter(t, orig)
	tag := uniqueName(t, "ten")
	if r := fcvm(t, "snapshot", "create", orig, "--tag", tag); r.code != 0 {
		t.Fatalf("snapshot create: %s", r)
	}
	t.Cleanup(func() { fcvm(t, "snapshot", "rm", "-f", tag) })
	onePSS := vmmPSS(t, orig)
	fcvm(t, "rm", "-f", orig)

	ids := make([]string, 10)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := fcvm(t, "snapshot", "run", tag, "-d")
			if r.code != 0 {
				t.Errorf("clone %d: %s", i, r)
				return
			}
			ids[i] = strings.TrimSpace(r.stdout)
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != "" {
			t.Cleanup(func() { fcvm(t, "rm", "-f", id) })
		}
	}
	if t.Failed() {
		return
	}
	var total int
	for i, id := range ids {
		if got := execOut(t, id, "cat", "/dev/shm/c"); got != "1" {
			t.Errorf("clone %d: counter %q", i, got)
		}
		total += vmmPSS(t, id)
	}
	t.Logf("PSS: one VM %d MiB, ten clones %d MiB (%.2fx)", onePSS>>10, total>>10, float64(total)/float64(onePSS))
	if total >= 10*onePSS {
		t.Errorf("ten clones use %d KiB PSS, ten separate VMs would use %d: no memory is shared", total, 10*onePSS)
	}
}

// vmmPSS is the PSS in KiB of a VM's VMM process, from fcvm inspect.
func vmmPSS(t *testing.T, vm string) int {
	t.Helper()
	r := fcvm(t, "inspect", "--format", "{{.Fcvm.Memory.PSSKiB}}", vm)
	n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if r.code != 0 || err != nil {
		t.Fatalf("inspect %s memory: %s", vm, r)
	}
	return n
}
