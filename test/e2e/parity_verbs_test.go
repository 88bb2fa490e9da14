package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
)

// TestParityVerbs drives start, restart, attach, cp, top, stats and the
// run flags handled on the host (--hostname, --cidfile, --stop-signal,
// --stop-timeout, -p GUESTPORT, --replace, --restart) on one VM, booted
// again by start and restart, compared with host podman on the same image
// where podman runs it here.
func TestParityVerbs(t *testing.T) {
	archive, ref := busyboxWithHostPodman(t)

	vm := uniqueName(t, "a")
	cidfile := filepath.Join(t.TempDir(), "cid")
	var host *hostPodman
	hostErr := make(chan error, 1)
	go func() {
		var err error
		host, err = startHostPodman(t, archive)
		hostErr <- err
	}()
	r := fcvm(t, "run", "-d", "--name", vm, "--hostname", "parity-host", "--stop-signal", "USR1", "--stop-timeout", "60",
		"--cidfile", cidfile, "-p", "127.0.0.1::80", ref, "sh", "-c", trapUSR1)
	t.Cleanup(func() { fcvm(t, "rm", "-f", vm) })
	if err := <-hostErr; err != nil {
		t.Fatal(err)
	}
	if r.code != 0 {
		t.Fatalf("run -d: %s", r)
	}
	id := strings.TrimSpace(r.stdout)

	var hostPort string
	t.Run("run flags", func(t *testing.T) {
		if b, err := os.ReadFile(cidfile); err != nil || string(b) != id {
			t.Errorf("--cidfile holds %q (%v), want %s", b, err, id)
		}
		// -p GUESTPORT: a free host port, shown by port and ls.
		r := fcvm(t, "port", vm, "80")
		m := regexp.MustCompile(`^127\.0\.0\.1:([0-9]+)\n$`).FindStringSubmatch(r.stdout)
		if r.code != 0 || m == nil || m[1] == "0" {
			t.Fatalf("port of -p 127.0.0.1::80: %s", r)
		}
		hostPort = m[1]
		if r := fcvm(t, "ls"); !strings.Contains(r.stdout, "127.0.0.1:"+hostPort+"->80/tcp") {
			t.Errorf("ls does not show the chosen port %s:\n%s", hostPort, r.stdout)
		}
		// --hostname: in the container, and in its /etc/hosts, as podman.
		if r := host.run(t, "hn", "none", "--hostname", "parity-host", "--", "sleep", "100000"); r.code != 0 {
			t.Fatalf("podman run --hostname: %s", r)
		}
		for _, cmd := range [][]string{{"hostname"}, {"sh", "-c", "grep -c parity-host /etc/hosts"}} {
			want := runQuiet(host.cmd(t.Context(), append([]string{"exec", "hn"}, cmd...)...), nil)
			got := fcvm(t, append([]string{"exec", vm}, cmd...)...)
			if got.code != 0 || got.stdout != want.stdout || want.code != 0 {
				t.Errorf("exec %v: fcvm %s; podman %s", cmd, got, want)
			}
		}
	})

	t.Run("cp", func(t *testing.T) { testCp(t, host, vm) })

	t.Run("top", func(t *testing.T) {
		got := fcvm(t, "top", vm)
		want := runQuiet(host.cmd(t.Context(), "top", host.name), nil)
		t.Logf("podman top: %s", want)
		lines := strings.Split(strings.TrimSpace(got.stdout), "\n")
		if got.code != 0 || len(lines) < 2 {
			t.Fatalf("top: %s", got)
		}
		if want.code != 0 || strings.Join(strings.Fields(strings.SplitN(want.stdout, "\n", 2)[0]), " ") != strings.Join(strings.Fields(lines[0]), " ") {
			t.Errorf("top header %q differs from podman's %q", lines[0], strings.SplitN(want.stdout, "\n", 2)[0])
		}
		// The main process is PID 1 of the container, as podman shows it.
		if f := strings.Fields(lines[1]); len(f) < 8 || f[0] != "root" || f[1] != "1" || f[2] != "0" || strings.Join(f[7:], " ") != "sh -c "+trapUSR1 {
			t.Errorf("top's first process: %q", lines[1])
		}
	})

	t.Run("stats", func(t *testing.T) {
		r := fcvm(t, "stats", "--no-stream", vm)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "ID") || !strings.Contains(r.stdout, "MEM USAGE / LIMIT") || !strings.Contains(r.stdout, vm) {
			t.Errorf("stats --no-stream: %s", r)
		}
		r = fcvm(t, "stats", "--no-stream", "--format", "json", vm)
		var rows []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 1 || rows[0]["name"] != vm || rows[0]["pids"].(float64) < 1 {
			t.Errorf("stats --format json: %v: %s", err, r)
		}
		r = fcvm(t, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.VMMRSS}}", vm)
		if f := strings.Fields(r.stdout); r.code != 0 || len(f) < 3 || f[0] != vm || f[1] == "0" {
			t.Errorf("stats --format template: %s", r)
		}
	})

	t.Run("inspect", func(t *testing.T) {
		got := fcvm(t, "inspect", vm)
		want := runQuiet(host.cmd(t.Context(), "inspect", host.name), nil)
		var g, w []map[string]any
		if err := json.Unmarshal([]byte(got.stdout), &g); err != nil || len(g) != 1 {
			t.Fatalf("fcvm inspect: %v: %s", err, got)
		}
		if err := json.Unmarshal([]byte(want.stdout), &w); err != nil || len(w) != 1 {
			t.Fatalf("podman inspect: %v: %s", err, want)
		}
		// Every podman field fcvm fills has podman's name and JSON type.
		compareShape(t, "", g[0], w[0])
		r := fcvm(t, "inspect", "--format", "{{.Id}} {{.Name}} {{.State.Status}} {{.State.Running}} {{.Config.Hostname}} {{.NetworkSettings.Ports}}", vm)
		if want := fmt.Sprintf("%s %s running true parity-host map[80/tcp:[{127.0.0.1 %s}]]\n", id, vm, hostPort); r.stdout != want {
			t.Errorf("inspect --format: want %q: %s", want, r)
		}
		pid := fcvm(t, "inspect", "--format", "{{.State.Pid}}", vm).stdout
		if rec := findVM(t, vm); rec == nil || pid != fmt.Sprintf("%d\n", rec.VMMPID) {
			t.Errorf("State.Pid %q is not the VMM's PID (%+v)", pid, rec)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		existing := filepath.Join(t.TempDir(), "cid")
		newCID := filepath.Join(t.TempDir(), "new.cid")
		os.WriteFile(existing, nil, 0o644)
		bad := uniqueName(t, "bad")
		for _, c := range []struct {
			args []string
			has  string
		}{
			{[]string{"start", vm}, "is running"},
			{[]string{"start", "nosuch-vm"}, "no such VM: nosuch-vm"},
			{[]string{"start", "-a", vm, "other"}, "give one VM"},
			{[]string{"start", "-i", vm}, "needs -a"},
			{[]string{"run", "--name", bad, "--cidfile", newCID, "oci-archive:/nonexistent.tar", "true"}, "nonexistent.tar"},
			{[]string{"restart", "nosuch-vm"}, "no such VM: nosuch-vm"},
			{[]string{"attach", "nosuch-vm"}, "no such VM: nosuch-vm"},
			{[]string{"attach", "--detach-keys", "alt-x", vm}, "--detach-keys"},
			{[]string{"cp", "nosuch-vm:/etc/hostname", t.TempDir()}, "no such VM: nosuch-vm"},
			{[]string{"cp", vm + ":/nonexistent", t.TempDir()}, "no such file or directory"},
			{[]string{"cp", "/nonexistent-host-path", vm + ":/tmp"}, "no such file or directory"},
			{[]string{"cp", t.TempDir(), vm + ":/nonexistent-dir/sub/x"}, "no such file or directory"},
			{[]string{"cp", vm + ":/etc", existing}, "cannot copy a directory onto a file"},
			{[]string{"cp", vm + ":/etc/hostname", vm + ":/tmp"}, "between VMs"},
			{[]string{"cp", "/a", "/b"}, "NAME:PATH"},
			{[]string{"top", "nosuch-vm"}, "no such VM: nosuch-vm"},
			{[]string{"top", vm, "pid"}, "descriptors are not supported"},
			{[]string{"stats", "--no-stream", "nosuch-vm"}, "no such VM: nosuch-vm"},
			{[]string{"run", "--name", bad, "--cidfile", existing, ref, "true"}, "the file exists"},
			{[]string{"run", "--name", bad, "--hostname", "bad_host!", ref, "true"}, "not a valid host name"},
			{[]string{"run", "--name", bad, "-d", "--restart", "sometimes", ref, "true"}, "--restart"},
			{[]string{"run", "--name", bad, "--restart", "always", ref, "true"}, "needs -d"},
			{[]string{"run", "--name", bad, "--stop-signal", "NOSUCH", ref, "true"}, "unknown signal"},
			{[]string{"run", "--name", bad, "-p", "127.0.0.1::0", ref, "true"}, "between 1 and 65535"},
			{[]string{"run", "--name", bad, "--pull", "sometimes", ref, "true"}, "--pull"},
			{[]string{"run", "--name", bad, "--mount", "type=volume,source=v,target=/t", ref, "true"}, "type=bind"},
			{[]string{"run", "--name", bad, "--pull", "never", "localhost:9/fcvm/never-pulled:1", "true"}, "not in the cache"},
			{[]string{"run", "--name", vm, ref, "true"}, "already in use"},
		} {
			r := fcvm(t, c.args...)
			if r.code != 125 || r.stdout != "" || !strings.Contains(r.stderr, c.has) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%s: want exit 125, nothing on stdout and one line with %q: %s", strings.Join(c.args, " "), c.has, r)
			}
		}
		if findVM(t, bad) != nil {
			t.Errorf("a refused run left VM %s behind", bad)
		}
		if _, err := os.Stat(newCID); err == nil {
			t.Errorf("a failed run left its --cidfile behind")
		}
		if b, _ := os.ReadFile(existing); len(b) != 0 {
			t.Errorf("a refused run wrote the existing --cidfile: %q", b)
		}
	})

	// attach streams what the container writes from now on; stop sends
	// the --stop-signal (the trap exits 3) and attach exits with the
	// container's code, as podman's does.
	bootID := guestBootID(t, vm)
	fcvm(t, "exec", vm, "sh", "-c", "echo kept > /kept; echo kept > /tmp/kept")
	t.Run("attach and stop signal", func(t *testing.T) {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		defer cancel()
		att := fcvmCmd(ctx, dataDir, "attach", "--no-stdin", vm)
		att.Stdout, att.Stderr = &out, &out
		if err := att.Start(); err != nil {
			t.Fatal(err)
		}
		seen := false
		for deadline := time.Now().Add(time.Minute); !seen && time.Now().Before(deadline); {
			fcvm(t, "exec", vm, "sh", "-c", "echo attached-out > /proc/1/fd/1")
			time.Sleep(500 * time.Millisecond)
			seen = strings.Contains(out.String(), "attached-out")
		}
		if !seen {
			t.Errorf("attach did not show the container's output: %q", out.String())
		}
		if strings.Contains(out.String(), "ready") {
			t.Errorf("attach replayed output from before it attached: %q", out.String())
		}
		if r := fcvm(t, "stop", vm); r.code != 0 || r.stdout != vm+"\n" {
			t.Errorf("stop: %s", r)
		}
		err := att.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Errorf("attach after stop with --stop-signal USR1: want exit 3 from the trap, got %v: %q", err, out.String())
		}
		if r := fcvm(t, "wait", vm); r.stdout != "3\n" {
			t.Errorf("wait: %s", r)
		}
		if r := host.run(t, "stopsig", "none", "--stop-signal", "USR1", "--", "sh", "-c", trapUSR1); r.code != 0 {
			t.Fatalf("podman run: %s", r)
		}
		runQuiet(host.cmd(t.Context(), "stop", "stopsig"), nil)
		if r := runQuiet(host.cmd(t.Context(), "wait", "stopsig"), nil); r.stdout != "3\n" {
			t.Errorf("podman stop with --stop-signal USR1, wait: want 3 as fcvm: %s", r)
		}
	})

	t.Run("start and restart", func(t *testing.T) {
		if r := fcvm(t, "start", vm); r.code != 0 || r.stdout != vm+"\n" {
			t.Fatalf("start: %s", r)
		}
		if rec := findVM(t, vm); rec == nil || rec.Status != "running" || rec.ID != id {
			t.Errorf("after start: %+v", rec)
		}
		// The same name, ID, ports and flags; a new guest boot.
		if r := fcvm(t, "port", vm, "80"); r.stdout != "127.0.0.1:"+hostPort+"\n" {
			t.Errorf("port after start: %s", r)
		}
		if r := fcvm(t, "exec", vm, "hostname"); r.stdout != "parity-host\n" {
			t.Errorf("hostname after start: %s", r)
		}
		// What the container wrote in its root before the stop is still
		// there, as podman's start keeps it.
		if r := fcvm(t, "exec", vm, "sh", "-c", "cat /kept /tmp/kept"); r.code != 0 || r.stdout != "kept\nkept\n" {
			t.Errorf("files the container wrote before the stop, after start: %s", r)
		}
		started := guestBootID(t, vm)
		if started == bootID {
			t.Errorf("start did not boot the guest again (boot_id %s)", started)
		}
		if r := fcvm(t, "restart", vm); r.code != 0 || r.stdout != vm+"\n" {
			t.Fatalf("restart: %s", r)
		}
		if again := guestBootID(t, vm); again == started {
			t.Errorf("restart did not boot the guest again (boot_id %s)", again)
		}
		if rec := findVM(t, vm); rec == nil || rec.Status != "running" {
			t.Errorf("after restart: %+v", rec)
		}
	})

	// --replace takes the name over; on-failure:1 boots the VM once more
	// when its container fails, then leaves it exited. The container
	// reads a line (-i): attach and start -a -i give it one.
	t.Run("replace attach stdin restart policy", func(t *testing.T) {
		share := t.TempDir()
		os.WriteFile(filepath.Join(share, "f"), []byte("shared\n"), 0o644)
		r := fcvm(t, "run", "-d", "-i", "--pull", "always", "--replace", "--name", vm, "--restart", "on-failure:1",
			"--mount", "type=bind,source="+share+",target=/data,ro", "--mount", "type=tmpfs,target=/scratch", ref, "sh", "-c", `read line; echo "got $line"; exit 4`)
		if r.code != 0 {
			t.Fatalf("run --replace: %s", r)
		}
		if nid := strings.TrimSpace(r.stdout); nid == id {
			t.Errorf("--replace kept the old VM's ID")
		}
		if _, err := os.Stat(filepath.Join(dataDir, "vms", id)); err == nil {
			t.Errorf("--replace left the old VM's dir")
		}
		attach := func(line string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			r := runQuiet(fcvmCmd(ctx, dataDir, "attach", vm), []byte(line+"\n"))
			if r.code != 4 || r.stdout != "got "+line+"\n" {
				t.Errorf("attach with %q on stdin: want its echo and exit 4: %s", line, r)
			}
		}
		if r := fcvm(t, "exec", vm, "cat", "/data/f"); r.stdout != "shared\n" {
			t.Errorf("--mount type=bind: %s", r)
		}
		if r := fcvm(t, "exec", vm, "sh", "-c", "grep -c ' /scratch tmpfs ' /proc/mounts"); r.stdout != "1\n" {
			t.Errorf("--mount type=tmpfs: %s", r)
		}
		// The detach keys leave the container running, its stdin open.
		if r := runQuiet(fcvmCmd(t.Context(), dataDir, "attach", vm), []byte("\x10\x11")); r.code != 0 || r.stdout != "" {
			t.Errorf("attach, then ctrl-p ctrl-q: want exit 0 and no output: %s", r)
		}
		if r := fcvm(t, "inspect", "--format", "{{.RestartCount}} {{.State.Status}}", vm); r.stdout != "0 running\n" {
			t.Errorf("after detaching: %s", r)
		}
		attach("one")
		waitInspect(t, vm, "1 running 0\n") // booted again by the policy
		attach("two")
		waitInspect(t, vm, "1 exited 4\n") // and not again
		// start -a -i stays in the foreground with stdin, and exits with
		// the container's code; the policy's count is spent.
		if r := runQuiet(fcvmCmd(t.Context(), dataDir, "start", "-a", "-i", vm), []byte("three\n")); r.code != 4 || r.stdout != "got three\n" {
			t.Errorf("start -a -i: want the echo and exit code 4: %s", r)
		}
		if r := fcvm(t, "inspect", "--format", "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}", vm); r.stdout != "1 exited 4\n" {
			t.Errorf("after start -a: %s", r)
		}
	})
}

// waitInspect waits for inspect's restart count, status and exit code to
// read want.
func waitInspect(t *testing.T, vm, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		r := fcvm(t, "inspect", "--format", "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}", vm)
		if r.stdout == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("inspect never read %q: %s", want, r)
		}
		time.Sleep(2 * time.Second)
	}
}

// guestBootID is the guest kernel's boot ID: it changes with every boot.
func guestBootID(t *testing.T, vm string) string {
	t.Helper()
	r := fcvm(t, "exec", vm, "cat", "/proc/sys/kernel/random/boot_id")
	if r.code != 0 || len(r.stdout) < 32 {
		t.Fatalf("read boot_id: %s", r)
	}
	return strings.TrimSpace(r.stdout)
}

// testCp copies a tree into the VM and back, compared with podman cp into
// and out of host podman's container, then checks tar streams and that
// paths resolve in the container's root.
func testCp(t *testing.T, host *hostPodman, vm string) {
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "sub"), 0o750)
	os.WriteFile(filepath.Join(src, "sub", "data"), []byte("some data\n"), 0o640)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.Symlink("sub/data", filepath.Join(src, "link"))
	os.Chmod(src, 0o711)
	list := []string{"sh", "-c", "cd /tmp && find tree | sort | while read f; do stat -c '%n %a %F' \"$f\"; done; cat tree/link"}

	// Into the container: SRC dir to an existing dir.
	if r := fcvm(t, "cp", src, vm+":/tmp"); r.code != 0 || r.stdout != "" {
		t.Fatalf("cp to the VM: %s", r)
	}
	if r := runQuiet(host.cmd(t.Context(), "cp", src, host.name+":/tmp"), nil); r.code != 0 {
		t.Fatalf("podman cp: %s", r)
	}
	got := fcvm(t, append([]string{"exec", vm}, list...)...)
	want := runQuiet(host.cmd(t.Context(), append([]string{"exec", host.name}, list...)...), nil)
	if got.code != 0 || got.stdout != want.stdout {
		t.Errorf("the tree in the VM:\n%s\ndiffers from podman's:\n%s", got.stdout, want.stdout)
	}

	// Out of the container: to a new name, and a file into a dir.
	dst := t.TempDir()
	if r := fcvm(t, "cp", vm+":/tmp/tree", filepath.Join(dst, "back")); r.code != 0 {
		t.Fatalf("cp from the VM: %s", r)
	}
	pdst := t.TempDir()
	if r := runQuiet(host.cmd(t.Context(), "cp", host.name+":/tmp/tree", filepath.Join(pdst, "back")), nil); r.code != 0 {
		t.Fatalf("podman cp out: %s", r)
	}
	if g, w := treeListing(t, filepath.Join(dst, "back")), treeListing(t, filepath.Join(pdst, "back")); g != w {
		t.Errorf("copied back:\n%s\npodman's:\n%s", g, w)
	}
	hostname := fcvm(t, "exec", vm, "cat", "/etc/hostname").stdout
	if r := fcvm(t, "cp", vm+":/etc/hostname", dst); r.code != 0 {
		t.Errorf("cp a file into a dir: %s", r)
	} else if b, _ := os.ReadFile(filepath.Join(dst, "hostname")); string(b) != hostname || hostname == "" {
		t.Errorf("copied /etc/hostname: %q, want %q", b, hostname)
	}

	// Tar streams: out to stdout, in from stdin.
	r := runQuiet(fcvmCmd(t.Context(), dataDir, "cp", vm+":/tmp/tree/sub", "-"), nil)
	if names := tarNames(t, []byte(r.stdout)); r.code != 0 || names != "sub/ sub/data" {
		t.Errorf("cp NAME:PATH -: entries %q: exit %d %s", names, r.code, r.stderr)
	}
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	tw.WriteHeader(&tar.Header{Name: "streamed", Mode: 0o600, Size: 3, Typeflag: tar.TypeReg})
	tw.Write([]byte("abc"))
	tw.Close()
	if r := runQuiet(fcvmCmd(t.Context(), dataDir, "cp", "-", vm+":/tmp"), in.Bytes()); r.code != 0 {
		t.Errorf("cp - NAME:DIR: %s", r)
	}
	if r := fcvm(t, "exec", vm, "stat", "-c", "%a %s", "/tmp/streamed"); r.stdout != "600 3\n" {
		t.Errorf("streamed file: %s", r)
	}

	// Paths resolve in the container's root: an absolute symlink and ..
	// lead to the container's /, never the guest's (which has podman).
	fcvm(t, "exec", vm, "ln", "-s", "/", "/tmp/rootlink")
	for _, p := range []string{"/tmp/rootlink/usr/bin/podman", "/../../../usr/bin/podman"} {
		if r := fcvm(t, "cp", vm+":"+p, t.TempDir()); r.code != 125 || !strings.Contains(r.stderr, "no such file or directory") {
			t.Errorf("cp %s reached outside the container: %s", p, r)
		}
	}
	if r := fcvm(t, "cp", vm+":/tmp/rootlink/etc/hostname", filepath.Join(dst, "h2")); r.code != 0 {
		t.Errorf("cp through a symlink to the container's /: %s", r)
	} else if b, _ := os.ReadFile(filepath.Join(dst, "h2")); string(b) != hostname {
		t.Errorf("through the symlink: %q", b)
	}

	// Data holding the channel's own handshake bytes (the fc-agent binary
	// does) is data: in by cp and by exec's stdin, and back out.
	var odd []byte
	for i := range 2000 {
		odd = append(odd, channel.HelloMagic()...)
		odd = append(odd, byte(i), 0xc0, 0xdb, 0xdc, 0xdd)
	}
	oddFile := filepath.Join(t.TempDir(), "handshake-bytes")
	os.WriteFile(oddFile, odd, 0o644)
	sum := fmt.Sprintf("%x  -\n", md5.Sum(odd))
	if r := fcvm(t, "cp", oddFile, vm+":/tmp/"); r.code != 0 {
		t.Fatalf("cp a file holding the handshake's bytes: %s", r)
	}
	if r := runQuiet(fcvmCmd(t.Context(), dataDir, "exec", vm, "sh", "-c", "md5sum < /tmp/handshake-bytes"), nil); r.stdout != sum {
		t.Errorf("the file in the VM: %s, want %s", r, sum)
	}
	if r := runQuiet(fcvmCmd(t.Context(), dataDir, "exec", "-i", vm, "md5sum"), odd); r.stdout != sum {
		t.Errorf("the bytes through exec -i: %s, want %s", r, sum)
	}
	if r := fcvm(t, "cp", vm+":/tmp/handshake-bytes", filepath.Join(dst, "odd")); r.code != 0 {
		t.Errorf("cp it back: %s", r)
	} else if b, _ := os.ReadFile(filepath.Join(dst, "odd")); !bytes.Equal(b, odd) {
		t.Errorf("copied back: %d bytes differ from the %d sent", len(b), len(odd))
	}
}

// treeListing is path, mode and content of every file under dir.
func treeListing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %v", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %q", c)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %s", l)
		}
		b.WriteByte('\n')
		return nil
	})
	return b.String()
}

func tarNames(t *testing.T, b []byte) string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Sprintf("bad tar: %v", err)
		}
		names = append(names, h.Name)
	}
	return strings.Join(names, " ")
}

// compareShape checks that every key of got (fcvm's inspect) that podman's
// document (want) has is of the same JSON type, recursively; "Fcvm" is
// fcvm's own.
func compareShape(t *testing.T, at string, got, want map[string]any) {
	t.Helper()
	for k, gv := range got {
		if k == "Fcvm" {
			continue
		}
		wv, ok := want[k]
		if !ok {
			t.Errorf("inspect: %s%s is not in podman's document", at, k)
			continue
		}
		if gv == nil || wv == nil {
			continue
		}
		if fmt.Sprintf("%T", gv) != fmt.Sprintf("%T", wv) {
			t.Errorf("inspect: %s%s is %T, podman's %T (%v)", at, k, gv, wv, wv)
			continue
		}
		if gm, ok := gv.(map[string]any); ok && k != "Labels" && k != "Ports" {
			compareShape(t, at+k+".", gm, wv.(map[string]any))
		}
	}
}
