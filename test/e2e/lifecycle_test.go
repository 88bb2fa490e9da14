package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLifecycle drives detached VMs the way a podman user would: exec
// (compared with host podman, case by case), logs, stop, wait, ls, gc,
// interactive terminals under tmux, and the death of a supervisor or of
// its VMM. Booting a VM costs 20 to 40 s under TCG, so the VMs are booted
// at once and shared by the subtests.
func TestLifecycle(t *testing.T) {
	archive, ref := busyboxWithHostPodman(t, "tmux")

	// The main VM prints a line a second on each stream; the term VM
	// ignores SIGTERM. The tty VM is an interactive `run -it` in tmux.
	mainVM := uniqueName(t, "main")
	termVM := uniqueName(t, "term")
	ttyVM := uniqueName(t, "tty")
	tm := newTmux(t)
	tm.start(t, "run", 100, 30, "run", "-it", "--rm", "--network", "none", "--name", ttyVM, ref, "sh")

	var wg sync.WaitGroup
	errs := make([]error, 3)
	var host *hostPodman
	for i, args := range [][]string{
		{"--name", mainVM, ref, "sh", "-c", `i=0; while :; do echo line $i; echo eline $i >&2; i=$((i+1)); sleep 1; done`},
		{"--name", termVM, "--network", "none", ref, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runQuiet(fcvmCmd(t.Context(), dataDir, append([]string{"run", "-d"}, args...)...), nil)
			if r.code != 0 || len(strings.TrimSpace(r.stdout)) != 64 {
				errs[i] = fmt.Errorf("run -d %s: want the VM's ID on stdout: %s", args[1], r)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		host, errs[2] = startHostPodman(t, archive)
	}()
	// -it without a terminal on stdin: as podman, a warning, and the
	// container still gets a terminal (CRLF line ends).
	var noTerm result
	wg.Add(1)
	go func() {
		defer wg.Done()
		noTerm = runQuiet(fcvmCmd(t.Context(), dataDir, "run", "--rm", "-it", "--network", "none", ref, "sh", "-c", "echo hi; exit 3"), nil)
	}()
	t.Cleanup(func() { fcvm(t, "rm", "-f", mainVM, termVM, ttyVM) })

	// While those boot: a supervisor killed outright takes its VMM down
	// and gc reclaims what it left; this needs no container running.
	t.Run("supervisor SIGKILL", func(t *testing.T) { testSupervisorKill(t, ref) })

	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if rec := findVM(t, mainVM); rec == nil || rec.Status != "running" || rec.PID == 0 || rec.VMMPID == 0 {
		t.Fatalf("after run -d, want a running record with supervisor and VMM PIDs: %+v", rec)
	}

	t.Run("run -it without a terminal", func(t *testing.T) {
		if noTerm.code != 3 || noTerm.stdout != "hi\r\n" || !strings.Contains(noTerm.stderr, "input device is not a TTY") {
			t.Errorf("want exit 3, hi with CRLF and podman's warning: %s", noTerm)
		}
	})
	t.Run("parity with podman exec", func(t *testing.T) { testExecParity(t, host, mainVM) })
	t.Run("ten execs at once", func(t *testing.T) { testTenExecs(t, mainVM) })
	t.Run("signals reach exec", func(t *testing.T) { testExecSignal(t, mainVM) })
	t.Run("exec through the zygote", func(t *testing.T) { testZygote(t, mainVM) })
	t.Run("exec -it under tmux", func(t *testing.T) {
		tm.start(t, "exec", 100, 30, "exec", "-it", mainVM, "sh")
		drivePerson(t, tm, "exec", 3)
	})
	t.Run("run -it under tmux", func(t *testing.T) {
		drivePerson(t, tm, "run", 4)
		waitGone(t, ttyVM)
	})
	t.Run("logs", func(t *testing.T) { testLogs(t, mainVM) })
	t.Run("stop ignoring SIGTERM", func(t *testing.T) { testStop(t, termVM) })
	t.Run("bad input", func(t *testing.T) {
		for _, verb := range [][]string{{"exec", "nosuch-vm", "true"}, {"logs", "nosuch-vm"}, {"stop", "nosuch-vm"}, {"wait", "nosuch-vm"}} {
			r := fcvm(t, verb...)
			if r.code != 125 || !strings.Contains(r.stderr, "no such VM: nosuch-vm") || r.stdout != "" {
				t.Errorf("%s on an unknown name: want exit 125 and \"no such VM\": %s", verb[0], r)
			}
		}
	})
	t.Run("VMM death ends its supervisor", func(t *testing.T) { testVMMDeath(t, mainVM) })
}

// runQuiet runs cmd with stdin and collects its output without logging
// it (some outputs are megabytes).
func runQuiet(cmd *exec.Cmd, stdin []byte) result {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		r.code, r.stderr, r.runErr = -1, err.Error(), err
	}
	return r
}

// short describes a result whose output may be large.
func short(r result) string {
	cut := func(s string) string {
		if len(s) > 300 {
			return fmt.Sprintf("%q... (%d bytes, sha256 %x)", s[:300], len(s), sha256.Sum256([]byte(s)))
		}
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("exit %d, stdout %s, stderr %s", r.code, cut(r.stdout), cut(r.stderr))
}

// hostPodman is a container of the same busybox image in the host's
// podman, in a storage of its own.
type hostPodman struct {
	global []string
	conf   string
	name   string
}

func (h *hostPodman) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "podman", append(append([]string(nil), h.global...), args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+h.conf)
	return cmd
}

// hostPodmanConf is the host podman's containers.conf: file locks, and the
// default capabilities Debian's containers-common lists (what the guest's
// podman gave containers). CONTAINERS_CONF replaces the system's files, so
// without them podman would fall back to its compiled-in, larger set.
const hostPodmanConf = `[containers]
default_capabilities = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]

[engine]
lock_type = "file"
`

// startHostPodman loads the archive into a private podman storage and
// starts a container that sleeps. Host podman needs runc (crun refuses
// this host's hybrid cgroups) and explicit rlimits (the sandbox forbids
// raising them to podman's defaults). Its storage, run and tmp dirs are
// its own, and so are its locks (file locks in its tmp dir: podman's
// default shared-memory locks are numbered machine-wide and would clash
// with other podman users here).
func startHostPodman(t *testing.T, archive string) (*hostPodman, error) {
	dir := t.TempDir()
	h := &hostPodman{
		global: []string{"--root", dir + "/root", "--runroot", dir + "/run", "--tmpdir", dir + "/tmp",
			"--cgroup-manager", "cgroupfs", "--events-backend", "file"},
		conf: filepath.Join(dir, "containers.conf"),
		name: "parity",
	}
	if err := os.WriteFile(h.conf, []byte(hostPodmanConf), 0o644); err != nil {
		return nil, err
	}
	r := runQuiet(h.cmd(t.Context(), "load", "-q", "-i", archive), nil)
	m := regexp.MustCompile(`sha256:([0-9a-f]{64})`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		return nil, fmt.Errorf("podman load: %s", r)
	}
	r = runQuiet(h.cmd(t.Context(), "run", "-d", "--name", h.name, "--runtime", "runc",
		"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--network", "none", m[1], "sleep", "100000"), nil)
	if r.code != 0 {
		return nil, fmt.Errorf("podman run: %s", r)
	}
	t.Cleanup(func() {
		runQuiet(h.cmd(context.Background(), "rm", "-f", "-t", "0", h.name), nil)
		runQuiet(h.cmd(context.Background(), "system", "reset", "-f"), nil)
	})
	return h, nil
}

type execCase struct {
	name  string
	flags []string
	cmd   []string
	stdin []byte
	// stderrHas replaces exact stderr comparison where the OCI runtimes
	// word their errors differently (runc on the host, crun in the guest).
	stderrHas string
}

func testExecParity(t *testing.T, host *hostPodman, vm string) {
	bigIn := bytes.Repeat([]byte("0123456789abcdef\n"), 64<<10) // 1.06 MiB
	cases := []execCase{
		{name: "exit 0", cmd: []string{"true"}},
		{name: "exit 1", cmd: []string{"false"}},
		{name: "exit 42 and streams", cmd: []string{"sh", "-c", "echo out; echo err >&2; echo out2; exit 42"}},
		{name: "not found 127", cmd: []string{"nosuch-command"}, stderrHas: "not found"},
		{name: "not executable 126", cmd: []string{"/etc/passwd"}, stderrHas: "permission denied"},
		{name: "env workdir user", flags: []string{"-e", "FOO=bar baz", "-w", "/tmp", "-u", "1000"}, cmd: []string{"sh", "-c", `echo "$FOO"; pwd; id -u`}},
		{name: "stdin -i", flags: []string{"-i"}, cmd: []string{"sh", "-c", "md5sum; echo done >&2"}, stdin: bigIn},
		{name: "stdin -i small", flags: []string{"-i"}, cmd: []string{"tr", "a-z", "A-Z"}, stdin: []byte("hello\nworld")},
		{name: "stdin not given without -i", cmd: []string{"cat"}, stdin: []byte("ignored\n")},
		{name: "large output", cmd: []string{"seq", "1", "700000"}},
		{name: "tty without a terminal", flags: []string{"-t"}, cmd: []string{"sh", "-c", "echo hi; echo there"}},
		// What the container may do: podman's capabilities (root's, and
		// a user's bounding set only), its seccomp filter, no
		// no_new_privileges, its masked and read-only /proc paths.
		{name: "capabilities and seccomp", cmd: []string{"grep", "-E", "^(Cap[A-Za-z]+|Seccomp|NoNewPrivs):", "/proc/self/status"}},
		{name: "capabilities of a user", flags: []string{"-u", "1000"}, cmd: []string{"grep", "-E", "^(Cap[A-Za-z]+|Seccomp|NoNewPrivs):", "/proc/self/status"}},
		{name: "user and groups", flags: []string{"-u", "app"}, cmd: []string{"sh", "-c", `id; echo "$HOME"`}},
		{name: "masked and read-only paths", cmd: []string{"sh", "-c", `wc -c </proc/keys; wc -c </proc/timer_list; ls /sys/firmware | wc -l; echo 1 >/proc/sys/kernel/domainname; echo $?; touch /sys/x; echo $?`}},
		{name: "seccomp refuses", cmd: []string{"sh", "-c", `unshare -U true 2>/dev/null; echo $?; swapoff -a 2>&1 | wc -l`}},
		{name: "killed 137", cmd: []string{"sh", "-c", "kill -9 $$"}},
		{name: "shm", cmd: []string{"sh", "-c", "df -k /dev/shm | tail -1 | tr -s ' ' | cut -d' ' -f2; grep -E ' /dev/(shm|mqueue|pts) ' /proc/mounts | cut -d' ' -f3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			want := runQuiet(host.cmd(t.Context(), append(append(append([]string{"exec"}, c.flags...), host.name), c.cmd...)...), c.stdin)
			got := runQuiet(fcvmCmd(t.Context(), dataDir, append(append(append([]string{"exec"}, c.flags...), vm), c.cmd...)...), c.stdin)
			t.Logf("podman: %s", short(want))
			t.Logf("fcvm:   %s", short(got))
			if got.code != want.code {
				t.Errorf("exit code %d, podman %d", got.code, want.code)
			}
			if got.stdout != want.stdout {
				t.Errorf("stdout differs from podman's:\nfcvm   %s\npodman %s", short(got), short(want))
			}
			if c.stderrHas != "" {
				for _, r := range []result{want, got} {
					if !strings.Contains(strings.ToLower(r.stderr), c.stderrHas) {
						t.Errorf("stderr %q does not say %q", r.stderr, c.stderrHas)
					}
				}
			} else if got.stderr != want.stderr {
				t.Errorf("stderr %q, podman %q", got.stderr, want.stderr)
			}
		})
	}
}

func testTenExecs(t *testing.T, vm string) {
	var wg sync.WaitGroup
	results := make([]result, 10)
	start := time.Now()
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runQuiet(fcvmCmd(t.Context(), dataDir, "exec", vm, "sh", "-c", fmt.Sprintf("echo out-%d; echo err-%d >&2; exit %d", i, i, i)), nil)
		}()
	}
	wg.Wait()
	t.Logf("ten execs in %s", time.Since(start))
	for i, r := range results {
		if r.code != i || r.stdout != fmt.Sprintf("out-%d\n", i) || r.stderr != fmt.Sprintf("err-%d\n", i) {
			t.Errorf("exec %d: %s", i, r)
		}
	}
}

// zygotePIDs lists, from the VM's side, the processes that are the
// agent's zygote (the process that starts exec's commands in the
// container).
func zygotePIDs(t *testing.T, vm string) []string {
	t.Helper()
	r := fcvm(t, "exec", "--vm", vm, "sh", "-c", `for p in /proc/[0-9]*; do [ "$(tr '\0' ' ' <$p/cmdline 2>/dev/null)" = "fc-agent zygote " ] && echo ${p#/proc/}; done; true`)
	if r.code != 0 {
		t.Fatalf("list the VM's processes: %s", r)
	}
	return strings.Fields(r.stdout)
}

// testZygote: commands in the container start from the zygote, which the
// container cannot see, and a zygote that dies is replaced.
func testZygote(t *testing.T, vm string) {
	pids := zygotePIDs(t, vm)
	if len(pids) != 1 {
		t.Fatalf("want one zygote in the VM, found %q", pids)
	}
	// The command's parent is outside the container's PID namespace,
	// as under crun exec.
	r := fcvm(t, "exec", vm, "sh", "-c", `grep PPid /proc/$$/status; cat /proc/[0-9]*/cmdline | tr '\0' ' ' | grep -c '[z]ygote'`)
	if r.stdout != "PPid:\t0\n0\n" {
		t.Errorf("inside the container: want parent 0 and no zygote in sight: %s", r)
	}
	if r := fcvm(t, "exec", "--vm", vm, "cat", "/proc/"+pids[0]+"/cgroup"); r.stdout != "0::/fcvm/fcvm\n" {
		t.Errorf("the zygote is not in the container's cgroup: %s", r)
	}
	// exec -d: podman's session ID at once, the command runs on.
	if r := fcvm(t, "exec", "-d", vm, "sh", "-c", "sleep 1; echo detached >/tmp/zygote-d"); r.code != 0 || !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(r.stdout) {
		t.Errorf("exec -d: want exit 0 and a session ID: %s", r)
	}
	if r := fcvm(t, "exec", "-d", vm, "nosuch-command"); r.code != 127 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("exec -d of a missing command: want exit 127 and \"not found\": %s", r)
	}
	for i := 0; ; i++ {
		if r := fcvm(t, "exec", vm, "cat", "/tmp/zygote-d"); r.stdout == "detached\n" {
			break
		} else if i == 50 {
			t.Fatalf("exec -d's command did not run: %s", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := fcvm(t, "exec", "--vm", vm, "sh", "-c", "kill -9 "+pids[0]); r.code != 0 {
		t.Fatalf("kill the zygote: %s", r)
	}
	if r := fcvm(t, "exec", vm, "echo", "after"); r.code != 0 || r.stdout != "after\n" {
		t.Errorf("exec once the zygote was killed: %s", r)
	}
	if again := zygotePIDs(t, vm); len(again) != 1 || again[0] == pids[0] {
		t.Errorf("want a new zygote after the old one died: before %q, now %q", pids, again)
	}
}

// testExecSignal: SIGINT to `fcvm exec` reaches the command in the
// container (podman exec itself would not pass it on).
func testExecSignal(t *testing.T, vm string) {
	cmd := fcvmCmd(t.Context(), dataDir, "exec", vm, "sh", "-c", `trap "echo got-int; exit 5" INT; echo ready; while :; do sleep 1; done`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(out)
	line, err := br.ReadString('\n')
	if line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("first line %q (%v), want ready; stderr %q", line, err, stderr.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(br)
	err = cmd.Wait()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	if code != 5 || string(rest) != "got-int\n" {
		t.Errorf("after SIGINT: exit %d (%v), output %q, stderr %q; want 5 and got-int", code, err, rest, stderr.String())
	}
}

// tmux runs terminal programs on a private server, for typing into them
// and reading their screens as a person would.
type tmux struct {
	sock string
	dir  string
}

func newTmux(t *testing.T) *tmux {
	tm := &tmux{sock: fmt.Sprintf("fcvm-e2e-%d", os.Getpid()), dir: t.TempDir()}
	t.Cleanup(func() {
		exec.Command("tmux", "-L", tm.sock, "kill-server").Run()
		os.Remove(fmt.Sprintf("/tmp/tmux-%d/%s", os.Getuid(), tm.sock))
	})
	return tm
}

func (tm *tmux) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// start opens a window named name running fcvm with args; when fcvm
// exits its status is written to a file.
func (tm *tmux) start(t *testing.T, name string, cols, rows int, args ...string) {
	t.Helper()
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	line := fmt.Sprintf("env FCVM_DATA_DIR=%s FCVM_RUNTIME_DIR=%s %s", q(dataDir), q(runtimeDir), q(filepath.Join(binDir, "fcvm")))
	for _, a := range args {
		line += " " + q(a)
	}
	line += fmt.Sprintf("; echo $? > %s; sleep 600", q(filepath.Join(tm.dir, name+".exit")))
	tm.run(t, "new-session", "-d", "-s", name, "-x", fmt.Sprint(cols), "-y", fmt.Sprint(rows), line)
}

func (tm *tmux) screen(t *testing.T, name string) string {
	return tm.run(t, "capture-pane", "-p", "-t", name)
}

// waitScreen waits until the screen matches re after the first skip
// matches of it, returning the screen.
func (tm *tmux) waitScreen(t *testing.T, name string, re *regexp.Regexp, skip int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := tm.screen(t, name)
		if len(re.FindAllString(s, -1)) > skip {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("screen of %s never showed %s (after %d); it shows:\n%s", name, re, skip, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// drivePerson types into the shell in window name: the size it sees, a
// resize, Ctrl-C of a running command, then exit with code.
func drivePerson(t *testing.T, tm *tmux, name string, code int) {
	prompt := regexp.MustCompile(`(?m)^/ #`) // capture-pane drops trailing spaces
	tm.waitScreen(t, name, prompt, 0, 4*time.Minute)
	tm.run(t, "send-keys", "-t", name, "stty size", "Enter")
	tm.waitScreen(t, name, regexp.MustCompile(`(?m)30 100\s*$`), 0, time.Minute)
	tm.run(t, "resize-window", "-t", name, "-x", "120", "-y", "40")
	// The new size travels to the guest's terminal while the shell
	// reads the next command: ask again until it shows, as a person
	// would. (ash's cursor-position query may echo before the answer.)
	big := regexp.MustCompile(`(?m)40 120\s*$`)
	for try := 0; ; try++ {
		tm.run(t, "send-keys", "-t", name, "stty size", "Enter")
		if try == 10 {
			tm.waitScreen(t, name, big, 0, time.Minute)
			break
		}
		time.Sleep(3 * time.Second)
		if big.MatchString(tm.screen(t, name)) {
			break
		}
	}
	tm.run(t, "send-keys", "-t", name, "sleep 1000", "Enter")
	time.Sleep(2 * time.Second)
	tm.run(t, "send-keys", "-t", name, "C-c")
	// Wait for the prompt after ^C before typing on, as a person would;
	// ash's cursor-position query is answered after typed-ahead input and
	// then echoed in front of the output, so no anchors.
	time.Sleep(2 * time.Second)
	tm.run(t, "send-keys", "-t", name, "echo after-$((40+2))", "Enter")
	tm.waitScreen(t, name, regexp.MustCompile(`(?m)after-42\s*$`), 0, time.Minute)
	tm.run(t, "send-keys", "-t", name, fmt.Sprintf("exit %d", code), "Enter")
	exitFile := filepath.Join(tm.dir, name+".exit")
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := os.ReadFile(exitFile)
		if err == nil && len(b) > 0 {
			if got := strings.TrimSpace(string(b)); got != fmt.Sprint(code) {
				t.Errorf("exit status %s, want %d; screen:\n%s", got, code, tm.screen(t, name))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fcvm did not exit after `exit`; screen:\n%s", tm.screen(t, name))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("screen:\n%s", tm.screen(t, name))
}

var lineRE = regexp.MustCompile(`^line (\d+)$`)

func testLogs(t *testing.T, vm string) {
	all := runQuiet(fcvmCmd(t.Context(), dataDir, "logs", vm), nil)
	outLines := strings.Split(strings.TrimSpace(all.stdout), "\n")
	errLines := strings.Split(strings.TrimSpace(all.stderr), "\n")
	if all.code != 0 || len(outLines) < 5 || !lineRE.MatchString(outLines[0]) || !strings.HasPrefix(errLines[0], "eline ") {
		t.Fatalf("logs: want line N on stdout and eline N on stderr: %s", short(all))
	}
	for i, l := range outLines {
		if l != fmt.Sprintf("line %d", i) {
			t.Fatalf("logs stdout line %d is %q", i, l)
		}
	}

	t.Run("tail", func(t *testing.T) {
		r := fcvm(t, "logs", "--tail", "3", vm)
		n := strings.Count(r.stdout, "\n") + strings.Count(r.stderr, "\n")
		if r.code != 0 || n != 3 {
			t.Errorf("--tail 3 gave %d lines: %s", n, r)
		}
		if r := fcvm(t, "logs", "--tail", "0", vm); r.code != 0 || r.stdout+r.stderr != "" {
			t.Errorf("--tail 0: %s", r)
		}
	})
	t.Run("since", func(t *testing.T) {
		// Cut at a line's own timestamp: --since keeps that line and every
		// later one and nothing before, however fast the guest wrote them.
		stamped := fcvm(t, "logs", "-t", vm)
		lines := strings.Split(strings.TrimSpace(stamped.stdout), "\n")
		if stamped.code != 0 || len(lines) < 3 {
			t.Fatalf("logs -t: %s", stamped)
		}
		ts, first, _ := strings.Cut(lines[len(lines)-3], " ")
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Fatalf("logs -t line %q: %v", lines[len(lines)-3], err)
		}
		r := fcvm(t, "logs", "--since", ts, vm)
		got := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(got) < 3 || got[0] != first {
			t.Fatalf("--since %s (the time of %q): %s", ts, first, r)
		}
		for i := 1; i < len(got); i++ {
			var a, b int
			fmt.Sscanf(got[i-1], "line %d", &a)
			fmt.Sscanf(got[i], "line %d", &b)
			if b != a+1 {
				t.Errorf("--since %s gave %q: not every line from %q on", ts, got, first)
				break
			}
		}
		// A duration reaches back from now: an hour covers the whole log.
		if r := fcvm(t, "logs", "--since", "1h", vm); r.code != 0 || !strings.HasPrefix(r.stdout, "line 0\n") {
			t.Errorf("--since 1h: %s", r)
		}
		if r := fcvm(t, "logs", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), vm); r.code != 0 || r.stdout != "" {
			t.Errorf("--since in the future: %s", r)
		}
		if r := fcvm(t, "logs", "--since", "yesterday-ish", vm); r.code != 125 || !strings.Contains(r.stderr, "--since") {
			t.Errorf("bad --since: %s", r)
		}
	})
	t.Run("timestamps", func(t *testing.T) {
		r := fcvm(t, "logs", "-t", "--tail", "2", vm)
		for _, l := range strings.Split(strings.TrimSpace(r.stdout+r.stderr), "\n") {
			ts, _, _ := strings.Cut(l, " ")
			if when, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(when) > time.Minute {
				t.Errorf("line %q: no recent RFC 3339 timestamp (%v)", l, err)
			}
		}
	})
	t.Run("follow", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		cmd := fcvmCmd(ctx, dataDir, "logs", "-f", "--tail", "1", vm)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		sc := bufio.NewScanner(out)
		var nums []int
		var times []time.Time
		for len(nums) < 4 && sc.Scan() {
			var n int
			if _, err := fmt.Sscanf(sc.Text(), "line %d", &n); err != nil {
				t.Fatalf("followed line %q", sc.Text())
			}
			nums, times = append(nums, n), append(times, time.Now())
		}
		cancel()
		if len(nums) < 4 {
			t.Fatalf("logs -f gave %v, want 4 lines", nums)
		}
		for i := 1; i < len(nums); i++ {
			if nums[i] != nums[i-1]+1 {
				t.Errorf("followed lines %v are not consecutive", nums)
			}
		}
		// A line a second: the last ones arrive as they are written.
		if gap := times[3].Sub(times[1]); gap < 1200*time.Millisecond {
			t.Errorf("lines 2 to 4 arrived within %s: not followed as written", gap)
		}
	})
}

func testStop(t *testing.T, vm string) {
	start := time.Now()
	r := fcvm(t, "stop", "-t", "4", vm)
	took := time.Since(start)
	if r.code != 0 || r.stdout != vm+"\n" {
		t.Fatalf("stop: %s", r)
	}
	if took < 4*time.Second || took > 40*time.Second {
		t.Errorf("stop -t 4 of a container ignoring SIGTERM took %s", took)
	}
	t.Logf("stop -t 4 took %s", took)
	if r := fcvm(t, "wait", vm); r.code != 0 || r.stdout != "137\n" {
		t.Errorf("wait after a kill: %s", r)
	}
	rec := findVM(t, vm)
	if rec == nil || rec.Status != "exited" || rec.ExitCode == nil || *rec.ExitCode != 137 {
		t.Errorf("record after stop: %+v", rec)
	}
	if r := fcvm(t, "stop", vm); r.code != 0 || r.stdout != vm+"\n" {
		t.Errorf("stop of a stopped VM (podman succeeds and prints the name): %s", r)
	}
	if r := fcvm(t, "exec", vm, "true"); r.code != 125 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("exec on a stopped VM: %s", r)
	}
	if r := fcvm(t, "logs", vm); r.code != 0 || r.stdout != "ready\n" {
		t.Errorf("logs after exit: %s", r)
	}
	if r := fcvm(t, "ls"); strings.Contains(r.stdout, vm) {
		t.Errorf("ls without -a lists a stopped VM:\n%s", r.stdout)
	}
	if r := fcvm(t, "ls", "-a"); !regexp.MustCompile(`Exited \(137\).*` + regexp.QuoteMeta(vm)).MatchString(r.stdout) {
		t.Errorf("ls -a does not show %s as Exited (137):\n%s", vm, r.stdout)
	}
}

func testSupervisorKill(t *testing.T, ref string) {
	name := uniqueName(t, "kill")
	cmd := fcvmCmd(t.Context(), dataDir, "run", "-d", "--rm", "--name", name, ref, "sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	var rec *vmRecord
	deadline := time.Now().Add(time.Minute)
	for rec == nil || rec.VMMPID == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no VMM PID in the record: %+v", rec)
		}
		time.Sleep(100 * time.Millisecond)
		rec = quietVM(t, name)
	}
	if !isQEMU(rec.VMMPID) {
		t.Fatalf("VMM %d is not a running qemu", rec.VMMPID)
	}
	// The VMM and the network helpers (rootless: the namespace holder
	// and pasta or slirp4netns) are all the supervisor's descendants.
	helpers := descendants(rec.PID)
	t.Logf("supervisor %d has descendants %v", rec.PID, helpers)
	if len(helpers) == 0 {
		t.Fatalf("supervisor %d has no child processes", rec.PID)
	}
	syscall.Kill(rec.PID, syscall.SIGKILL)
	start := time.Now()
	for isQEMU(rec.VMMPID) || len(alive(helpers)) > 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("5s after the supervisor was killed these still run: %v", alive(helpers))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("VMM and helpers gone %s after their supervisor", time.Since(start))
	if r := findVM(t, name); r == nil || r.Status != "dead" {
		t.Fatalf("ls after the kill: %+v, want dead", r)
	}
	if r := fcvm(t, "gc"); r.code != 0 || !strings.Contains(r.stdout, "reclaimed "+name) {
		t.Errorf("gc: %s", r)
	}
	assertNothingLeft(t, name, rec.ID)
}

func testVMMDeath(t *testing.T, vm string) {
	rec := findVM(t, vm)
	if rec == nil || rec.Status != "running" {
		t.Fatalf("record: %+v", rec)
	}
	// An exec running when the VM dies ends with an error, never hangs.
	ex := fcvmCmd(t.Context(), dataDir, "exec", vm, "sh", "-c", "echo ready; sleep 1000")
	exOut, err := ex.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var exErr bytes.Buffer
	ex.Stderr = &exErr
	if err := ex.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(exOut).ReadString('\n'); line != "ready\n" {
		t.Fatalf("exec before the VMM dies: %q, stderr %q", line, exErr.String())
	}
	exDone := make(chan error, 1)
	go func() { exDone <- ex.Wait() }()

	syscall.Kill(rec.VMMPID, syscall.SIGKILL)
	start := time.Now()
	select {
	case err := <-exDone:
		if err == nil || !strings.Contains(exErr.String(), "exec in "+vm) {
			t.Errorf("exec across the VMM's death: %v, stderr %q; want an error", err, exErr.String())
		}
		t.Logf("exec ended %s after the VMM died: %s", time.Since(start), strings.TrimSpace(exErr.String()))
	case <-time.After(30 * time.Second):
		ex.Process.Kill()
		t.Errorf("exec still waiting 30s after the VMM died")
	}
	for syscall.Kill(rec.PID, 0) == nil {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("supervisor %d still runs 20s after its VMM was killed", rec.PID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("supervisor gone %s after its VMM", time.Since(start))
	r := findVM(t, vm)
	if r == nil || r.Status != "exited" {
		t.Errorf("record after the VMM died: %+v, want exited", r)
	}
	if _, err := os.Stat(filepath.Join(runtimeDir, rec.ID[:12])); err == nil {
		t.Errorf("runtime dir of %s left behind", vm)
	}
	if res := fcvm(t, "exec", vm, "true"); res.code == 0 {
		t.Errorf("exec after the VMM died: %s", res)
	}
}

// waitGone waits for a --rm VM's record to go.
func waitGone(t *testing.T, name string) {
	deadline := time.Now().Add(time.Minute)
	for quietVM(t, name) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("record of %s still there a minute after it exited", name)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// quietVM is findVM without logging, for polling.
func quietVM(t *testing.T, name string) *vmRecord {
	r := runQuiet(fcvmCmd(t.Context(), dataDir, "ls", "-a", "--json"), nil)
	var recs []vmRecord
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil {
		t.Fatalf("ls --json: %v: %s", err, r)
	}
	for _, rec := range recs {
		if rec.Name == name {
			return &rec
		}
	}
	return nil
}

// descendants lists the processes below pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var p, ppid int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces: fields start after its ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 {
			fmt.Sscan(f[1], &ppid)
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// alive keeps the PIDs that still run (zombies count as gone).
func alive(pids []int) []int {
	var out []int
	for _, p := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err == nil && !bytes.Contains(st, []byte(") Z ")) {
			out = append(out, p)
		}
	}
	return out
}

func isQEMU(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(b), "qemu") {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// A zombie is gone for our purposes.
	return err == nil && !strings.Contains(string(st), ") Z ")
}
