package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/imagetest"
)

// TestParity drives the podman verbs beyond run and exec (kill, port,
// rename) on real VMs, compared with host podman on the same image where
// podman can run it here: exit codes as wait sees them, the output of
// kill and port, and the errors of bad input. Two VMs are booted at once
// and shared: one publishing ports, one without a network whose container
// run's container flags shape (shapeFlags), compared with host podman's
// container of the same flags.
func TestParity(t *testing.T) {
	archive, ref := busyboxWithHostPodman(t)

	portVM := uniqueName(t, "port")
	noneVM := uniqueName(t, "none")
	tcpPort, udpPort := freePort(t), freePort(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	var host *hostPodman
	for i, args := range [][]string{
		{"--name", portVM, "-p", fmt.Sprintf("127.0.0.1:%d:80", tcpPort), "-p", fmt.Sprintf("127.0.0.1:%d:53/udp", udpPort),
			"--dns-search", "svc.test", "--dns-option", "ndots:3", ref, "sh", "-c", trapUSR1},
		{"--name", noneVM, "--network", "none", ref, "sleep", "100000"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if args[1] == noneVM {
				args = append(append(args[:4:4], shapeFlags...), args[4:]...)
			}
			r := runQuiet(fcvmCmd(t.Context(), dataDir, append([]string{"run", "-d"}, args...)...), nil)
			if r.code != 0 {
				errs[i] = fmt.Errorf("run -d %s: %s", args[1], r)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		host, errs[2] = startHostPodman(t, archive)
	}()
	wg.Wait()
	renamed := portVM + "-renamed"
	t.Cleanup(func() { fcvm(t, "rm", "-f", portVM, noneVM, renamed) })
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	t.Run("port", func(t *testing.T) {
		want := fmt.Sprintf("80/tcp -> 127.0.0.1:%d\n53/udp -> 127.0.0.1:%d\n", tcpPort, udpPort)
		if r := fcvm(t, "port", portVM); r.code != 0 || r.stdout != want {
			t.Errorf("port: want %q: %s", want, r)
		}
		for filter, want := range map[string]string{
			"80":     fmt.Sprintf("127.0.0.1:%d\n", tcpPort),
			"80/tcp": fmt.Sprintf("127.0.0.1:%d\n", tcpPort),
			"53/udp": fmt.Sprintf("127.0.0.1:%d\n", udpPort),
		} {
			if r := fcvm(t, "port", portVM, filter); r.code != 0 || r.stdout != want {
				t.Errorf("port %s: want %q: %s", filter, want, r)
			}
		}
		// The same listing from host podman, when its rootful
		// slirp4netns can publish here.
		hostPort := freePort(t)
		r := host.run(t, "ports", "slirp4netns", "-p", fmt.Sprintf("127.0.0.1:%d:80", hostPort), "--", "sleep", "100000")
		if r.code != 0 {
			t.Logf("host podman cannot publish a port here; compared with podman's documented format only: %s", r)
		} else {
			defer runQuiet(host.cmd(t.Context(), "rm", "-f", "-t", "0", "ports"), nil)
			pr := runQuiet(host.cmd(t.Context(), "port", "ports"), nil)
			fr := runQuiet(fcvmCmd(t.Context(), dataDir, "port", portVM, "80"), nil)
			t.Logf("podman port: %s", pr)
			want := strings.ReplaceAll(pr.stdout, fmt.Sprint(hostPort), fmt.Sprint(tcpPort))
			if pr.code != 0 || "80/tcp -> "+fr.stdout != want {
				t.Errorf("port differs from podman's: fcvm 80/tcp -> %q, podman %q (%s)", fr.stdout, want, pr)
			}
		}
	})

	t.Run("container flags", func(t *testing.T) {
		name := "shape"
		if r := host.run(t, name, "none", append(slices.Clone(shapeFlags), "--", "sleep", "100000")...); r.code != 0 {
			t.Fatalf("podman run %v: %s", shapeFlags, r)
		}
		for _, cmd := range []string{
			`grep -E '^Cap(Bnd|Eff):' /proc/self/status`,
			`ulimit -c; ulimit -Hc`,
			`grep -w db /etc/hosts`,
			`touch /x; echo $?; touch /scratch/a /tmp/b /run/c /var/tmp/d && echo writable`,
			`tr '\0' ' ' </proc/1/cmdline; echo`,
		} {
			want := runQuiet(host.cmd(t.Context(), "exec", name, "sh", "-c", cmd), nil)
			got := runQuiet(fcvmCmd(t.Context(), dataDir, "exec", noneVM, "sh", "-c", cmd), nil)
			if got.code != want.code || got.stdout != want.stdout || got.stderr != want.stderr {
				t.Errorf("%s:\nfcvm   %s\npodman %s", cmd, short(got), short(want))
			}
		}
		// The main process that cannot start: podman's exit codes.
		for _, c := range []struct {
			args []string
			want int
		}{{[]string{"nosuch-command"}, 127}, {[]string{"/etc/passwd"}, 126}, {[]string{"-w", "/etc/passwd", "true"}, 126}} {
			i := len(c.args) - 1
			r := fcvm(t, append(append(append([]string{"run", "--rm", "--network", "none"}, c.args[:i]...), ref), c.args[i:]...)...)
			pr := runQuiet(host.cmd(t.Context(), append(append(append([]string{"run", "--rm", "--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
				"--network", "none"}, c.args[:i]...), host.image(t)), c.args[i:]...)...), nil)
			if r.code != c.want || pr.code != c.want {
				t.Errorf("run %s: fcvm exit %d, podman %d, want %d (%s)", c.args, r.code, pr.code, c.want, r)
			}
		}
		// A bad flag is refused before anything starts.
		for _, c := range []struct{ flag, has string }{
			{"--cap-add=CAP_NOPE", "--cap-add"}, {"--ulimit=nofile=x", "--ulimit"},
			{"--tmpfs=rel", "--tmpfs"}, {"--add-host=db", "--add-host"}, {"--dns=name", "--dns"},
			{"--dns=192.0.2.53", "conflicts with --network none"}, // podman's conflict too
			{"--dns-search=a b", "--dns-search"}, {"--dns-option=ndots:5", "--dns-option: conflicts with --network none"},
		} {
			r := fcvm(t, "run", "--rm", "--network", "none", c.flag, ref, "true")
			if r.code != 125 || !strings.Contains(r.stderr, c.has) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("run %s: want exit 125 and one line naming %s: %s", c.flag, c.has, r)
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			has  string
		}{
			{[]string{"port", noneVM}, "publishes no ports"},
			{[]string{"port", portVM, "81"}, "no published port 81/tcp"},
			{[]string{"port", portVM, "53"}, "no published port 53/tcp"},
			{[]string{"port", portVM, "http"}, "GUESTPORT"},
			{[]string{"port", "nosuch-vm"}, "no such VM: nosuch-vm"},
			{[]string{"kill", "-s", "NOSUCH", portVM}, "unknown signal"},
			{[]string{"kill", "-s", "99", portVM}, "out of range"},
			{[]string{"kill", "nosuch-vm"}, "no such VM: nosuch-vm"},
			{[]string{"rename", portVM, noneVM}, "already in use"},
			{[]string{"rename", portVM, "a/b"}, "invalid VM name"},
			{[]string{"rename", "nosuch-vm", "other"}, "no such VM: nosuch-vm"},
		} {
			r := fcvm(t, c.args...)
			if r.code != 125 || r.stdout != "" || !strings.Contains(r.stderr, c.has) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%s: want exit 125, nothing on stdout and one line with %q: %s", strings.Join(c.args, " "), c.has, r)
			}
		}
		// podman's code for an unknown signal is fcvm's too.
		if r := runQuiet(host.cmd(t.Context(), "kill", "-s", "NOSUCH", host.name), nil); r.code != 125 {
			t.Errorf("podman kill -s NOSUCH: want exit 125: %s", r)
		}
	})

	t.Run("rename", func(t *testing.T) {
		if r := fcvm(t, "rename", portVM, renamed); r.code != 0 || r.stdout != "" {
			t.Fatalf("rename of a running VM: %s", r)
		}
		if r := fcvm(t, "exec", renamed, "echo", "hi"); r.code != 0 || r.stdout != "hi\n" {
			t.Errorf("exec by the new name: %s", r)
		}
		if r := fcvm(t, "exec", portVM, "true"); r.code != 125 || !strings.Contains(r.stderr, "no such VM") {
			t.Errorf("exec by the old name: %s", r)
		}
		if r := fcvm(t, "ls"); !strings.Contains(r.stdout, renamed) {
			t.Errorf("ls does not show %s:\n%s", renamed, r.stdout)
		}
		if r := fcvm(t, "rename", renamed, portVM); r.code != 0 {
			t.Errorf("rename back: %s", r)
		}
	})

	t.Run("dns flags", func(t *testing.T) {
		// --dns-search and --dns-option replace the search domains and
		// options; the nameserver stays the VM's forwarder.
		want := "search svc.test\nnameserver 172.30.0.1\noptions ndots:3\n"
		if r := fcvm(t, "exec", portVM, "cat", "/etc/resolv.conf"); r.code != 0 || r.stdout != want {
			t.Errorf("resolv.conf with --dns-search and --dns-option: want %q: %s", want, r)
		}
	})

	t.Run("pause", func(t *testing.T) {
		if r := fcvm(t, "pause", noneVM); r.code != 0 || r.stdout != noneVM+"\n" {
			t.Fatalf("pause: want the name: %s", r)
		}
		if rec := findVM(t, noneVM); rec == nil || rec.Status != "paused" {
			t.Errorf("record after pause: %+v", rec)
		}
		if r := fcvm(t, "ls", "--filter", "status=paused"); !regexp.MustCompile(`Paused +`+regexp.QuoteMeta(noneVM)).MatchString(r.stdout) || strings.Contains(r.stdout, portVM) {
			t.Errorf("ls does not show %s as Paused:\n%s", noneVM, r.stdout)
		}
		// A frozen guest answers nothing: what needs it fails at once.
		for _, c := range []struct {
			args []string
			has  string
		}{
			{[]string{"exec", noneVM, "true"}, "is paused: unpause it first with fcvm unpause " + noneVM},
			{[]string{"kill", noneVM}, "is paused"},
			{[]string{"pause", noneVM}, "already paused"},
			{[]string{"snapshot", "create", noneVM, "--tag", "paused-" + noneVM}, "paused"},
		} {
			start := time.Now()
			r := fcvm(t, c.args...)
			if r.code != 125 || !strings.Contains(r.stderr, c.has) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%s on a paused VM: want exit 125 and one line with %q: %s", c.args[0], c.has, r)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("%s on a paused VM took %s", c.args[0], took)
			}
		}
		// The guest's clock stood still: its uptime grew by at most the
		// time around the pause, less the pause.
		const frozen = 10 * time.Second
		t0 := time.Now()
		before := guestUptime(t, portVM)
		if r := fcvm(t, "pause", portVM); r.code != 0 {
			t.Fatalf("pause: %s", r)
		}
		time.Sleep(frozen)
		if r := fcvm(t, "unpause", portVM); r.code != 0 || r.stdout != portVM+"\n" {
			t.Fatalf("unpause: want the name: %s", r)
		}
		after := guestUptime(t, portVM)
		wall := time.Since(t0)
		if ran := time.Duration((after - before) * float64(time.Second)); ran > wall-frozen+time.Second {
			t.Errorf("guest uptime grew %s over %s of which %s paused", ran, wall, frozen)
		}
		if r := fcvm(t, "unpause", noneVM); r.code != 0 || r.stdout != noneVM+"\n" {
			t.Fatalf("unpause: %s", r)
		}
		if r := fcvm(t, "exec", noneVM, "echo", "back"); r.code != 0 || r.stdout != "back\n" {
			t.Errorf("exec after unpause: %s", r)
		}
		if r := fcvm(t, "unpause", noneVM); r.code != 125 || !strings.Contains(r.stderr, "not paused") {
			t.Errorf("unpause of a running VM: %s", r)
		}
	})

	// Last: kill ends the containers.
	t.Run("kill", func(t *testing.T) {
		// The signal reaches the main process: its trap's exit code, or
		// 128+9 for the default SIGKILL, as podman's wait reports them.
		for _, c := range []struct {
			vm   string
			args []string
			cmd  []string
			want string
		}{
			{portVM, []string{"-s", "usr1"}, []string{"--", "sh", "-c", trapUSR1}, "3\n"},
			{noneVM, nil, []string{"--", "sleep", "100000"}, "137\n"},
		} {
			r := fcvm(t, append(append([]string{"kill"}, c.args...), c.vm)...)
			if r.code != 0 || r.stdout != c.vm+"\n" {
				t.Errorf("kill %v: want the name: %s", c.args, r)
			}
			if r := fcvm(t, "wait", c.vm); r.code != 0 || r.stdout != c.want {
				t.Errorf("wait after kill %v: want %q: %s", c.args, c.want, r)
			}
			name := "k" + strings.TrimSpace(c.want)
			if r := host.run(t, name, "none", c.cmd...); r.code != 0 {
				t.Fatalf("podman run: %s", r)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			pk := runQuiet(host.cmd(ctx, append(append([]string{"kill"}, c.args...), name)...), nil)
			pw := runQuiet(host.cmd(ctx, "wait", name), nil)
			if pk.code != 0 || pk.stdout != name+"\n" || pw.stdout != c.want {
				t.Errorf("podman kill %v, wait: want %q as fcvm: %s; %s", c.args, c.want, pk, pw)
			}
		}
		if r := fcvm(t, "kill", noneVM); r.code != 125 || !strings.Contains(r.stderr, "not running") {
			t.Errorf("kill of an exited VM: %s", r)
		}
		for _, verb := range []string{"pause", "unpause"} {
			if r := fcvm(t, verb, noneVM); r.code != 125 || r.stdout != "" || !strings.Contains(r.stderr, "(exited)") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%s of an exited VM: want exit 125 and one line: %s", verb, r)
			}
		}
		// The record keeps the ports of a VM that ended.
		if r := fcvm(t, "port", portVM, "80"); r.code != 0 || r.stdout != fmt.Sprintf("127.0.0.1:%d\n", tcpPort) {
			t.Errorf("port of an exited VM: %s", r)
		}
	})
}

// shapeFlags are podman's flags that shape a container, as the parity
// test gives them to fcvm and host podman alike (the ulimit is one the
// host podman's run does not set already: podman merges a repeated one
// oddly).
var shapeFlags = []string{"--cap-add", "net_raw", "--cap-drop", "CHOWN", "--read-only", "--tmpfs", "/scratch",
	"--ulimit", "core=1000:2000", "--add-host", "db:10.1.2.3", "--init"}

// busyboxWithHostPodman is what the tests compared with host podman
// start from: the guest artifacts, the tools host podman needs (and the
// extra ones named), and the busybox test image as an OCI archive, whose
// path and fcvm reference it returns.
func busyboxWithHostPodman(t *testing.T, extra ...string) (archive, ref string) {
	t.Helper()
	needSetup(t)
	tools := append([]string{"podman", "runc"}, extra...)
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: apt-get install %s", tool, strings.Join(tools, " "))
		}
	}
	archive = filepath.Join(t.TempDir(), "busybox.tar")
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, imagetest.Options{}), archive)
	return archive, "oci-archive:" + archive
}

// guestUptime is the guest's /proc/uptime in seconds.
func guestUptime(t *testing.T, vm string) float64 {
	t.Helper()
	r := fcvm(t, "exec", vm, "cat", "/proc/uptime")
	f := strings.Fields(r.stdout)
	if r.code != 0 || len(f) == 0 {
		t.Fatalf("read uptime: %s", r)
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("read uptime: %v", err)
	}
	return up
}

// trapUSR1 is a main process that exits 3 on SIGUSR1. A container's
// main process is the PID 1 of its namespace, which a signal without a
// handler does not end (but SIGKILL), in fcvm's guest as under podman.
const trapUSR1 = `trap "exit 3" USR1; echo ready; while :; do sleep 1; done`

// run starts a container of the image in the host podman, detached, as
// startHostPodman does: flags, then "--" and the command. A command whose
// output begins "ready" is waited for to print it.
func (h *hostPodman) run(t *testing.T, name, network string, args ...string) result {
	t.Helper()
	flags, cmd := []string(nil), args
	if i := slices.Index(args, "--"); i >= 0 {
		flags, cmd = args[:i], args[i+1:]
	}
	r := runQuiet(h.cmd(t.Context(), append(append(append([]string{"run", "-d", "--name", name, "--runtime", "runc",
		"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--network", network}, flags...), h.image(t)), cmd...)...), nil)
	if r.code != 0 || !strings.Contains(strings.Join(cmd, " "), "echo ready") {
		return r
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if l := runQuiet(h.cmd(t.Context(), "logs", name), nil); strings.HasPrefix(l.stdout, "ready") {
			break
		}
	}
	return r
}

// image is the ID of the image the host podman's container runs.
func (h *hostPodman) image(t *testing.T) string {
	t.Helper()
	r := runQuiet(h.cmd(t.Context(), "inspect", "--format", "{{.Image}}", h.name), nil)
	if r.code != 0 {
		t.Fatalf("podman inspect: %s", r)
	}
	return strings.TrimSpace(r.stdout)
}
