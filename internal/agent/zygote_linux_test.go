package agent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestMain lets the test binary be its own zygote: startZygote re-executes
// /proc/self/exe with zygoteArg, as the agent does.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == zygoteArg {
		if err := Zygote(); err != nil {
			fmt.Fprintln(os.Stderr, "zygote:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// denyUname is a seccomp program that fails uname(2) with EPERM and
// allows everything else: enough to see that a command runs under the
// container's filter.
func denyUname() []byte {
	type insn struct {
		Code   uint16
		Jt, Jf uint8
		K      uint32
	}
	prog := []insn{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // syscall number
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_UNAME},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	var b bytes.Buffer
	binary.Write(&b, binary.NativeEndian, prog)
	return b.Bytes()
}

// TestZygote runs the zygote against a stand-in container on the host: a
// process in its own PID, UTS, IPC, mount and network namespaces, in a
// cgroup of its own, with crun's state files as crun writes them.
func TestZygote(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestZygote needs root (namespaces, a cgroup, setuid)")
	}
	cgroups := "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(cgroups, "cgroup.controllers")); err != nil {
		cgroups = "/sys/fs/cgroup/unified" // a hybrid host
	}
	if _, err := os.Stat(filepath.Join(cgroups, "cgroup.controllers")); err != nil {
		t.Fatalf("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified: %v", err)
	}
	cgName := fmt.Sprintf("fcvm-zygote-test-%d", os.Getpid())
	cgDir := filepath.Join(cgroups, cgName)
	if err := os.Mkdir(cgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The cgroup goes once its processes have: wait for them.
		for i := 0; i < 100 && os.Remove(cgDir) != nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	})

	ctr := exec.Command("sh", "-c", "echo zygtest >/proc/sys/kernel/hostname && exec sleep 600")
	ctr.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNS | unix.CLONE_NEWNET}
	if err := ctr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctr.Process.Kill(); ctr.Wait() })
	// The stand-in's hostname is set once its sh has exec'd sleep.
	for i := 0; ; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ctr.Process.Pid))
		if string(b) == "sleep\n" {
			break
		}
		if i == 200 {
			t.Fatal("the stand-in container did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}

	crunDir := t.TempDir()
	oom := 100
	spec := specs.Spec{
		Process: &specs.Process{
			Rlimits:     []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1234, Soft: 1234}},
			OOMScoreAdj: &oom,
		},
		Linux: &specs.Linux{
			CgroupsPath: "/" + cgName,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
			Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActAllow},
		},
	}
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(crunDir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(crunDir, "seccomp.bpf"), denyUname(), 0o600); err != nil {
		t.Fatal(err)
	}

	z, err := startZygote(slog.New(slog.DiscardHandler), crunDir, cgroups, ctr.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(z.close)

	// run starts req and returns its output and exit code, or the
	// zygote's could-not-start reply.
	run := func(t *testing.T, req zygoteRequest) (stdout string, code int, startErr string) {
		t.Helper()
		outR, outW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer outR.Close()
		null, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		first, exited, err := z.start(req, []*os.File{null, outW, outW})
		null.Close()
		outW.Close()
		if err != nil {
			t.Fatal(err)
		}
		if first.Err != "" {
			return "", first.Code, first.Err
		}
		out, _ := io.ReadAll(outR)
		select {
		case r := <-exited:
			return string(out), r.Code, ""
		case <-time.After(30 * time.Second):
			t.Fatal("no exit from the zygote")
		}
		return "", 0, ""
	}

	t.Run("a user's command in the container", func(t *testing.T) {
		umask := uint32(0o027)
		out, code, serr := run(t, zygoteRequest{
			Args: []string{"sh", "-c", `cat /proc/sys/kernel/hostname; id -u; id -G; ulimit -n; grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; cat /proc/self/oom_score_adj; echo $$; umask; pwd; uname >/dev/null 2>&1; echo uname=$?; exit 7`},
			Env:  []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Cwd: "/tmp",
			UID: 1000, GID: 1000, Groups: []uint32{1001}, Umask: &umask,
			Caps:            specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN", "CAP_KILL"}},
			NoNewPrivileges: true,
		})
		want := "zygtest\n1000\n1000 1001\n1234\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000021\nNoNewPrivs:\t1\nSeccomp:\t2\n100\n2\n0027\n/tmp\nuname=1\n"
		if serr != "" || code != 7 || out != want {
			t.Errorf("got exit %d (%s), output:\n%s\nwant exit 7, output:\n%s", code, serr, out, want)
		}
	})
	t.Run("root keeps the container's capabilities", func(t *testing.T) {
		caps := []string{"CAP_CHOWN", "CAP_SETUID", "CAP_SYS_ADMIN"}
		out, code, serr := run(t, zygoteRequest{
			Args: []string{"grep", "-E", "^Cap(Eff|Prm|Bnd):", "/proc/self/status"}, Env: []string{"PATH=/usr/bin:/bin"}, Cwd: "/",
			Caps: specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
		})
		want := "CapPrm:\t0000000000200081\nCapEff:\t0000000000200081\nCapBnd:\t0000000000200081\n"
		if serr != "" || code != 0 || out != want {
			t.Errorf("got exit %d (%s), output %q, want %q", code, serr, out, want)
		}
	})
	t.Run("a kill reaches every process of the command", func(t *testing.T) {
		// The command forks as fast as it can when the SIGKILL comes: a
		// child being forked then must not survive it (it would hold the
		// output open, and the exec would never end).
		outR, outW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer outR.Close()
		const marker = "zygote-kill-test"
		first, exited, err := z.start(zygoteRequest{
			Args: []string{"sh", "-c", `while :; do sleep 600 & done`},
			Env:  []string{"PATH=/usr/bin:/bin", markerVar + "=" + marker}, Cwd: "/",
		}, []*os.File{outW, outW, outW})
		outW.Close()
		if err != nil || first.Err != "" {
			t.Fatalf("start: %v %+v", err, first)
		}
		time.Sleep(50 * time.Millisecond)
		(&execProc{marker: marker, pgid: first.Pid, done: make(chan struct{})}).signal(syscall.SIGKILL)
		eof := make(chan struct{})
		go func() { io.Copy(io.Discard, outR); close(eof) }()
		select {
		case <-eof:
		case <-time.After(10 * time.Second):
			t.Fatalf("the command's output is still open 10 s after SIGKILL: processes left %v", markedPIDs(marker))
		}
		if r := <-exited; r.Code != 128+int(syscall.SIGKILL) {
			t.Errorf("exit %d, want %d", r.Code, 128+int(syscall.SIGKILL))
		}
	})
	t.Run("a terminal", func(t *testing.T) {
		first, exited, err := z.start(zygoteRequest{
			Args: []string{"sh", "-c", `tty >/dev/null && echo tty; stty size; stat -c %u "$(tty)"; exit 3`}, Env: []string{"PATH=/usr/bin:/bin"}, Cwd: "/",
			UID: 1000, GID: 1000, Terminal: true, Rows: 30, Cols: 100,
		}, nil)
		if err != nil || first.Err != "" || len(first.files) != 1 {
			t.Fatalf("start: %v %+v", err, first)
		}
		master := first.files[0]
		defer master.Close()
		var out bytes.Buffer
		copied := make(chan struct{})
		go func() { io.Copy(&out, master); close(copied) }()
		select {
		case r := <-exited:
			if r.Code != 3 {
				t.Errorf("exit %d, want 3", r.Code)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no exit from the zygote")
		}
		<-copied // EIO once the slave's last holder has gone
		if want := "tty\r\n30 100\r\n1000\r\n"; out.String() != want {
			t.Errorf("terminal output %q, want %q", out.String(), want)
		}
	})
	for _, c := range []struct {
		name string
		req  zygoteRequest
		code int
		msg  string
	}{
		{"not found", zygoteRequest{Args: []string{"nosuch-command"}, Cwd: "/"}, 127, "executable file `nosuch-command` not found in $PATH: No such file or directory"},
		{"not executable", zygoteRequest{Args: []string{"/etc/passwd"}, Cwd: "/"}, 126, "open executable: Permission denied"},
		{"no such directory", zygoteRequest{Args: []string{"true"}, Cwd: "/nosuch-dir"}, 255, "chdir `/nosuch-dir`: No such file or directory"},
		{"unknown capability", zygoteRequest{Args: []string{"true"}, Cwd: "/", Caps: specs.LinuxCapabilities{Bounding: []string{"CAP_NOPE"}}}, 255, "capability CAP_NOPE: unknown"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, code, serr := run(t, c.req)
			if code != c.code || serr != c.msg {
				t.Errorf("got exit %d %q, want %d %q", code, serr, c.code, c.msg)
			}
		})
	}
	t.Run("the zygote is in the container's cgroup", func(t *testing.T) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", z.cmd.Process.Pid))
		if err != nil || !strings.Contains(string(b), "0::/"+cgName+"\n") {
			t.Errorf("zygote's cgroups: %q (%v), want 0::/%s", b, err, cgName)
		}
	})
}
