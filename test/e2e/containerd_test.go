package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/vishvananda/netlink"

	"github.com/fcvm/fcvm/internal/imagetest"
	"github.com/fcvm/fcvm/internal/nettest"
	"github.com/fcvm/fcvm/internal/network"
)

// containerdDir is where scripts/install-deps.sh unpacks Debian's
// containerd package.
func containerdDir() string {
	if d := os.Getenv("FCVM_CONTAINERD_DIR"); d != "" {
		return d
	}
	return "/var/cache/fcvm/containerd"
}

// ctrd is a containerd the test runs with its own config, root, state and
// sockets, and the fcvm shim on its PATH.
type ctrd struct {
	t    *testing.T
	dir  string
	sock string
	env  []string
	cmd  *exec.Cmd
	// runEntries are what /run/containerd held before: containerd puts
	// shim sockets and ctr its FIFOs there whatever its state dir says,
	// and the test removes only what it added (the directories too).
	runEntries map[string]bool
}

// containerdRunParents are the directories above containerdRunDirs, for
// removing those the test made.
var containerdRunParents = []string{"/run/containerd"}

var containerdRunDirs = []string{"/run/containerd/s", "/run/containerd/fifo"}

func startContainerd(t *testing.T) *ctrd { return startContainerdWith(t, "") }

// startContainerdWith starts a containerd whose config ends with cri, the
// CRI plugin's section; without one the CRI plugin is off.
func startContainerdWith(t *testing.T, cri string) *ctrd {
	t.Helper()
	bin := filepath.Join(containerdDir(), "usr", "bin")
	if _, err := os.Stat(filepath.Join(bin, "containerd")); err != nil {
		t.Fatalf("containerd not unpacked at %s (%v): run scripts/install-deps.sh", containerdDir(), err)
	}
	dir, err := os.MkdirTemp("", "fcvm-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &ctrd{t: t, dir: dir, sock: filepath.Join(dir, "containerd.sock"), runEntries: map[string]bool{}}
	for _, d := range append(containerdRunDirs, containerdRunParents...) {
		if _, err := os.Stat(d); err == nil {
			c.runEntries[d] = true
		}
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			c.runEntries[filepath.Join(d, e.Name())] = true
		}
	}
	disabled := `disabled_plugins = ["io.containerd.grpc.v1.cri"]`
	if cri != "" {
		disabled = ""
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
%s
[grpc]
  address = %q
[ttrpc]
  address = %q
%s`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), disabled, c.sock, c.sock+".ttrpc", strings.ReplaceAll(cri, "DIR", dir))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c.env = append(os.Environ(),
		"PATH="+binDir+":"+bin+":"+os.Getenv("PATH"),
		"FCVM_DATA_DIR="+dataDir,
		"FCVM_RUNTIME_DIR="+runtimeDir,
		"FCVM_DNS="+closedDNS,
	)
	t.Cleanup(c.cleanup)
	c.start()
	return c
}

// start runs containerd and waits until it answers.
func (c *ctrd) start() {
	t := c.t
	t.Helper()
	log, err := os.OpenFile(filepath.Join(c.dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	c.cmd = exec.Command(filepath.Join(containerdDir(), "usr", "bin", "containerd"), "--config", filepath.Join(c.dir, "config.toml"))
	c.cmd.Env, c.cmd.Stdout, c.cmd.Stderr = c.env, log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if r := c.ctrQuiet(nil, "version"); r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s; log:\n%s", c.sock, c.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends containerd by its PID (its shims live on, as they should).
func (c *ctrd) stop() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
	c.cmd = nil
}

func (c *ctrd) log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// cleanup stops containerd, ends any shim it left (a failure the test
// reports elsewhere), and removes what it added under /run/containerd.
func (c *ctrd) cleanup() {
	c.stop()
	for _, pid := range c.shims("") {
		c.t.Errorf("shim %d still running at the end", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, d := range containerdRunDirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if p := filepath.Join(d, e.Name()); !c.runEntries[p] {
				os.RemoveAll(p)
			}
		}
	}
	for _, d := range append(containerdRunDirs, containerdRunParents...) {
		if !c.runEntries[d] {
			os.Remove(d) // only if empty: another containerd may use it now
		}
	}
	for _, m := range mountsUnder(c.dir) {
		c.t.Errorf("mount %s left behind", m)
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	os.RemoveAll(c.dir)
}

func (c *ctrd) ctrQuiet(stdin []byte, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(containerdDir(), "usr", "bin", "ctr"), append([]string{"--address", c.sock}, args...)...)
	cmd.Env = c.env
	return runQuiet(cmd, stdin)
}

// ctr runs ctr against this containerd and logs its result.
func (c *ctrd) ctr(stdin []byte, args ...string) result {
	c.t.Helper()
	r := c.ctrQuiet(stdin, args...)
	if r.runErr != nil {
		c.t.Fatalf("ctr %v: %v", args, r.runErr)
	}
	c.t.Logf("ctr %s → %s", strings.Join(args, " "), r)
	return r
}

// ctrTTY runs ctr on a pseudo-terminal (ctr -t needs one) and returns
// what it printed and its exit code.
func (c *ctrd) ctrTTY(args ...string) (string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(containerdDir(), "usr", "bin", "ctr"), append([]string{"--address", c.sock}, args...)...)
	cmd.Env = c.env
	ptmx, err := pty.Start(cmd)
	if err != nil {
		c.t.Fatalf("ctr %v on a pty: %v", args, err)
	}
	defer ptmx.Close()
	out, _ := io.ReadAll(ptmx) // ends with EIO once ctr exits
	err = cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("ctr %v: %v", args, err)
	}
	c.t.Logf("ctr %s (tty) → exit %d: %q", strings.Join(args, " "), code, out)
	return string(out), code
}

// shims are the PIDs of this containerd's shims for container id (any
// id if empty), found by their command lines.
func (c *ctrd) shims(id string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-fcvm-v2" || !strings.Contains(string(b), c.sock) {
			continue
		}
		if id == "" || strings.Contains(string(b), "\x00-id\x00"+id+"\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitShimsGone waits until no shim process of container id runs:
// containerd cleans up after a dead shim in the background, by running
// `containerd-shim-fcvm-v2 delete`.
func (c *ctrd) waitShimsGone(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for len(c.shims(id)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("shim processes of %s still running: %v", id, c.shims(id))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// task is the task's PID as `ctr task ls` shows it (the VMM's), or 0
// when the task is not listed, and its status.
func (c *ctrd) task(id string) (pid int, status string) {
	c.t.Helper()
	r := c.ctrQuiet(nil, "task", "ls")
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == id {
			pid, _ = strconv.Atoi(f[1])
			return pid, f[2]
		}
	}
	return 0, ""
}

// waitTask waits for the task's status to become want ("" for gone).
func (c *ctrd) waitTask(id, want string) {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, st := c.task(id)
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %s is %q, want %q", id, st, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// assertGone checks that container id left nothing: no fcvm record, no
// VMM (vmmPID), no shim, no bundle, no mount.
func (c *ctrd) assertGone(t *testing.T, id string, vmmPID int) {
	t.Helper()
	if rec := findVM(t, "ctrd-default-"+id); rec != nil {
		t.Errorf("fcvm record of %s left behind: %+v", id, rec)
		if rec.ID != "" {
			assertNothingLeft(t, rec.Name, rec.ID)
		}
	}
	if vmmPID > 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", vmmPID)); err == nil && strings.Contains(string(b), "qemu") {
			t.Errorf("VMM %d of %s still running", vmmPID, id)
		}
	}
	if pids := c.shims(id); len(pids) > 0 {
		t.Errorf("shim of %s still running: %v", id, pids)
	}
	bundle := filepath.Join(c.dir, "state", "io.containerd.runtime.v2.task", "default", id)
	if _, err := os.Stat(bundle); err == nil {
		t.Errorf("bundle %s left behind", bundle)
	}
	if ms := mountsUnder(c.dir); len(ms) > 0 {
		t.Errorf("mounts left behind: %v", ms)
	}
}

// mountsUnder lists the mount points below dir.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestContainerdShim runs containers with containerd's ctr through
// containerd-shim-fcvm-v2: three VMs, each checked several ways.
func TestContainerdShim(t *testing.T) {
	needSetup(t)
	c := startContainerd(t)
	archive := filepath.Join(c.dir, "busybox.tar")
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, imagetest.Options{}), archive)
	const img = "fcvm.test/busybox:1"
	if r := c.ctr(nil, "image", "import", "--index-name", img, archive); r.code != 0 {
		t.Fatalf("import: %s\n%s", r, c.log())
	}
	broken := filepath.Join(c.dir, "broken.tar")
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, imagetest.Options{Entrypoint: []string{"/no/such/entrypoint"}, Cmd: []string{}}), broken)
	const brokenImg = "fcvm.test/broken:1"
	if r := c.ctr(nil, "image", "import", "--index-name", brokenImg, broken); r.code != 0 {
		t.Fatalf("import: %s", r)
	}
	run := []string{"run", "--runtime", "io.containerd.fcvm.v2"}

	t.Run("bad-entrypoint", func(t *testing.T) {
		r := c.ctr(nil, append(run, "--rm", brokenImg, "broken")...)
		if r.code == 0 || !strings.Contains(r.stderr, `exec: "/no/such/entrypoint": no such file or directory in the image`) {
			t.Errorf("missing entrypoint: want a clear error, got %s", r)
		}
		c.assertGone(t, "broken", 0)
	})

	t.Run("run-rm", func(t *testing.T) {
		r := c.ctr([]byte("from-stdin\n"), append(run, "--rm", img, "once", "sh", "-c", `read x; echo "out $x"; echo err >&2; exit 7`)...)
		if r.code != 7 || r.stdout != "out from-stdin\n" || r.stderr != "err\n" {
			t.Errorf("ctr run --rm: want exit 7, stdout %q, stderr %q; got %s", "out from-stdin\n", "err\n", r)
		}
		c.assertGone(t, "once", 0)
	})

	t.Run("run-tty", func(t *testing.T) {
		out, code := c.ctrTTY(append(run, "--rm", "-t", img, "tty1", "sh", "-c", "tty; exit 6")...)
		if code != 6 || !strings.Contains(out, "/dev/pts/") {
			t.Errorf("ctr run -t: want a terminal and exit 6, got exit %d %q", code, out)
		}
		c.assertGone(t, "tty1", 0)
	})

	t.Run("detached", func(t *testing.T) {
		r := c.ctr(nil, append(run, "-d", img, "long", "sh", "-c", `trap "echo got-term; exit 3" TERM; while true; do sleep 1; done`)...)
		if r.code != 0 {
			t.Fatalf("ctr run -d: %s\n%s", r, c.log())
		}
		pid, st := c.task("long")
		if st != "RUNNING" || pid == 0 {
			t.Fatalf("task long: pid %d status %q, want RUNNING", pid, st)
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.Contains(string(b), "qemu") {
			t.Errorf("task PID %d is not the VMM: %q %v", pid, b, err)
		}
		if r := c.ctr(nil, "task", "ps", "long"); r.code != 0 || !strings.Contains(r.stdout, strconv.Itoa(pid)) {
			t.Errorf("task ps: want PID %d, got %s", pid, r)
		}
		if r := c.ctr(nil, "task", "metrics", "long"); r.code != 0 || !strings.Contains(r.stdout, "memory.usage ") || strings.Contains(r.stdout, "memory.usage          0\n") {
			t.Errorf("task metrics: want the VMM's memory, got %s", r)
		}
		c.ctr(nil, "task", "pause", "long")
		if _, st := c.task("long"); st != "PAUSED" {
			t.Errorf("after task pause: %q, want PAUSED", st)
		}
		c.ctr(nil, "task", "resume", "long")
		if _, st := c.task("long"); st != "RUNNING" {
			t.Errorf("after task resume: %q, want RUNNING", st)
		}
		r = c.ctr(nil, "task", "exec", "--exec-id", "e1", "long", "sh", "-c", "echo exec-out; echo exec-err >&2; exit 5")
		if r.code != 5 || r.stdout != "exec-out\n" || r.stderr != "exec-err\n" {
			t.Errorf("task exec: want exit 5 and streams apart, got %s", r)
		}
		out, code := c.ctrTTY("task", "exec", "--exec-id", "e2", "-t", "long", "sh", "-c", "tty; exit 4")
		if code != 4 || !strings.Contains(out, "/dev/pts/") {
			t.Errorf("task exec -t: want a terminal and exit 4, got exit %d %q", code, out)
		}
		if r := c.ctr(nil, "task", "kill", "long"); r.code != 0 {
			t.Fatalf("task kill: %s", r)
		}
		c.waitTask("long", "STOPPED")
		r = c.ctr(nil, "task", "exec", "--exec-id", "late", "long", "true")
		if r.code == 0 || !strings.Contains(r.stderr, "not running") {
			t.Errorf("exec into a stopped container: want a clear error, got %s", r)
		}
		r = c.ctr(nil, "task", "delete", "long")
		if r.code != 0 || !strings.Contains(r.stderr, "exit code 3") {
			t.Errorf("task delete: want the exit code 3 of the TERM trap, got %s", r)
		}
		c.ctr(nil, "container", "rm", "long")
		c.assertGone(t, "long", pid)
	})

	t.Run("with-netns", func(t *testing.T) {
		// A namespace as CNI makes a pod's: the VM takes over its
		// interface (--network ns:), reaches what it routes to, and
		// leaves it as it was.
		pod, podIP := nettest.ServerNS(t, "fcctrd0", netip.MustParsePrefix("10.97.8.1/30"))
		path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(pod))
		ln, err := net.Listen("tcp4", "10.97.8.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveText(t, ln, "through-the-pod-namespace")
		r := c.ctr(nil, append(run, "--rm", "--with-ns", "network:"+path, img, "netns1", "sh", "-c",
			fmt.Sprintf("ip -4 -o addr show eth0; wget -q -O - http://%s/", ln.Addr()))...)
		if r.code != 0 || !strings.Contains(r.stdout, " "+podIP.String()+"/30 ") || !strings.HasSuffix(r.stdout, "through-the-pod-namespace") {
			t.Errorf("ctr run --with-ns network:PATH: want the namespace's address %s and the host's page, got %s", podIP, r)
		}
		c.assertGone(t, "netns1", 0)
		h, err := netlink.NewHandleAt(pod)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if _, err := h.LinkByName(network.TAPName); err == nil {
			t.Errorf("%s left in the pod's namespace", network.TAPName)
		}
		// A namespace with a network annotation too: which one is meant
		// is not guessed.
		r = c.ctr(nil, append(run, "--rm", "--with-ns", "network:"+path, "--annotation", "fcvm.io/network=bridged", img, "netns2", "true")...)
		if r.code == 0 || !strings.Contains(r.stderr, "drop the annotation") {
			t.Errorf("namespace and fcvm.io/network: want a clear error, got %s", r)
		}
		c.assertGone(t, "netns2", 0)
	})

	t.Run("shim-sigterm", func(t *testing.T) {
		if r := c.ctr(nil, append(run, "-d", img, "termed", "sleep", "1000")...); r.code != 0 {
			t.Fatalf("ctr run -d: %s\n%s", r, c.log())
		}
		pid, _ := c.task("termed")
		shims := c.shims("termed")
		if len(shims) != 1 {
			t.Fatalf("shims of termed: %v, want one", shims)
		}
		// A shim told to end takes its VM down before it exits.
		syscall.Kill(shims[0], syscall.SIGTERM)
		c.waitShimsGone(t, "termed")
		c.waitTask("termed", "")
		c.ctr(nil, "container", "rm", "termed")
		c.assertGone(t, "termed", pid)
	})

	t.Run("restart-and-kill-shim", func(t *testing.T) {
		// Bridged, so a network namespace, a veth pair and an nftables
		// table are there to be reclaimed.
		if r := c.ctr(nil, append(run, "-d", "--annotation", "fcvm.io/network=bridged", img, "survivor", "sleep", "1000")...); r.code != 0 {
			t.Fatalf("ctr run -d: %s\n%s", r, c.log())
		}
		pid, _ := c.task("survivor")
		rec := findVM(t, "ctrd-default-survivor")
		if rec == nil {
			t.Fatal("no fcvm record for survivor")
		}
		netns := filepath.Join("/run/netns", network.NetNSName(rec.ID))
		if _, err := os.Stat(netns); err != nil {
			t.Fatalf("bridged VM without its namespace: %v", err)
		}
		// containerd restarts; the shim goes on and containerd reconnects
		// to it by the address file in the bundle.
		c.stop()
		c.start()
		if _, st := c.task("survivor"); st != "RUNNING" {
			t.Fatalf("after a containerd restart, task survivor is %q, want RUNNING", st)
		}
		if r := c.ctr(nil, "task", "exec", "--exec-id", "x", "survivor", "echo", "still-here"); r.code != 0 || r.stdout != "still-here\n" {
			t.Errorf("exec after a containerd restart: %s", r)
		}
		// The shim is killed outright: its VMM dies with it, and
		// containerd's cleanup (shim delete) reclaims the rest.
		shims := c.shims("survivor")
		if len(shims) != 1 {
			t.Fatalf("shims of survivor: %v, want one", shims)
		}
		syscall.Kill(shims[0], syscall.SIGKILL)
		c.waitTask("survivor", "")
		c.waitShimsGone(t, "survivor")
		c.ctr(nil, "container", "rm", "survivor")
		c.assertGone(t, "survivor", pid)
		if _, err := os.Stat(netns); err == nil {
			t.Errorf("network namespace %s left behind", netns)
		}
		if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), " "+network.TableName(rec.ID)+"\n") {
			t.Errorf("nftables table %s left behind", network.TableName(rec.ID))
		}
		if _, err := net.InterfaceByName(network.LinkName(rec.ID)); err == nil {
			t.Errorf("link %s left behind", network.LinkName(rec.ID))
		}
	})
}
