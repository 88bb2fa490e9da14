package fusepipe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Helper processes re-execute the test binary with FUSEPIPE_HELPER set
// (see os/exec's tests): a second process for locks, another user for
// permissions, a server process to kill.
func TestMain(m *testing.M) {
	if h := os.Getenv("FUSEPIPE_HELPER"); h != "" {
		os.Exit(runHelper(h, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

func runHelper(kind, arg string) int {
	switch kind {
	case "server":
		// Serve arg (dir) on the Unix socket arg+".sock", then report ready.
		srv, err := NewServer(arg, ServerOptions{})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		l, err := net.Listen("unix", arg+".sock")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("ready")
		conn, err := l.Accept()
		if err != nil {
			return 1
		}
		srv.ServeConn(context.Background(), conn)
		return 0
	case "posixlock", "flock":
		// Take an exclusive lock on arg, report it, hold it until stdin
		// closes.
		f, err := os.OpenFile(arg, os.O_RDWR, 0)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		if kind == "flock" {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		} else {
			err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK})
		}
		if err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
		return 0
	case "do":
		// One file system call as this process's user: the
		// conformance run (conformance_linux_test.go).
		fmt.Println(runDo(os.Args[2:]))
		return 0
	case "open":
		// Open arg for reading and print the errno.
		f, err := os.Open(arg)
		if err != nil {
			fmt.Println(err)
			return 0
		}
		f.Close()
		fmt.Println("ok")
		return 0
	}
	fmt.Println("unknown helper", kind)
	return 2
}

// helper starts the test binary as a helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startHelper(t *testing.T, kind, arg string, cred *syscall.Credential) *helper {
	t.Helper()
	bin := os.Args[0]
	if cred != nil {
		bin = worldExecutable(t)
	}
	cmd := exec.Command(bin, "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), "FUSEPIPE_HELPER="+kind)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return h
}

// line reads the helper's next line of output.
func (h *helper) line(t *testing.T) string {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	c := make(chan res, 1)
	go func() { s, err := h.out.ReadString('\n'); c <- res{s, err} }()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("helper output: %v", r.err)
		}
		return strings.TrimSpace(r.s)
	case <-time.After(10 * time.Second):
		t.Fatal("helper silent for 10s")
	}
	return ""
}

// worldExecutable copies the test binary where any user can run it.
func worldExecutable(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(dir); d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	src, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}
