package network

import (
	"bufio"
	"context"
	"encoding/json"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/nettest"
	"github.com/fcvm/fcvm/internal/state"
)

func TestTwoNetworks(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			before := snapshot(t)
			t.Run("both", func(t *testing.T) {
				data := t.TempDir()
				var urls []string
				for _, name := range []string{"vm1", "vm2"} {
					port := nettest.FreePort(t)
					ports, _ := ParsePublish(fmt.Sprintf("127.0.0.1:%d:80", port))
					n, g := setupNet(t, m, Config{Ports: ports, DataDir: data})
					if n.GuestIP != GuestIP {
						t.Fatalf("guest IP %s", n.GuestIP)
					}
					serveGuest(t, g, name)
					urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/", port))
				}
				for i := 0; i < 3; i++ {
					for j, u := range urls {
						if got := httpGet(t, u); !strings.HasPrefix(got, fmt.Sprintf("vm%d from ", j+1)) {
							t.Fatalf("%s answered %q", u, got)
						}
					}
				}
			})
			checkGone(t, before)
		})
	}
}

func TestTeardownIdempotent(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			before := snapshot(t)
			n, err := Setup(context.Background(), Config{Mode: m.mode, ID: newID(t), DataDir: t.TempDir(), RuntimeDir: t.TempDir(), Pool: testPool, Log: testLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				if err := n.Teardown(); err != nil {
					t.Fatalf("Teardown %d: %v", i, err)
				}
			}
			if err := Reclaim(n); err != nil {
				t.Fatalf("Reclaim after Teardown: %v", err)
			}
			checkGone(t, before)
		})
	}
}

func TestStartProcess(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			n, err := Setup(context.Background(), Config{Mode: m.mode, ID: newID(t), DataDir: t.TempDir(), RuntimeDir: t.TempDir(), Pool: testPool, Log: testLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Teardown()
			var out strings.Builder
			cmd := exec.Command("sh", "-c", "readlink /proc/self/ns/net; ip -o link show tap0")
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := n.StartProcess(cmd); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%v: %s", err, out.String())
			}
			var st syscall.Stat_t
			if err := syscall.Stat(n.NetNS, &st); err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("net:[%d]\n", st.Ino); !strings.HasPrefix(out.String(), want) {
				t.Fatalf("process ran in %q, want %q", out.String(), want)
			}
		})
	}
}

// The helper process for the crash tests: it sets up a network from the
// JSON config in its environment, starts "sleep" as a stand-in VMM with a
// parent-death signal, prints the network and the sleeper as JSON, and
// waits to be killed.
type crashReport struct {
	Net   *Network
	Sleep state.Process
}

func runTestHelper(h string) int {
	switch h {
	case "crash":
		var cfg Config
		json.Unmarshal([]byte(os.Getenv("FCVM_TEST_CONFIG")), &cfg)
		cfg.Pool = testPool
		n, err := Setup(context.Background(), cfg)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		cmd := exec.Command("sleep", "1000")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := n.StartProcess(cmd); err != nil {
			fmt.Println("error", err)
			return 1
		}
		p, _ := state.ProcessOf(cmd.Process.Pid)
		b, _ := json.Marshal(crashReport{n, p})
		fmt.Println(string(b))
		select {}
	case "bridged":
		_, err := Setup(context.Background(), Config{Mode: ModeBridged, ID: "0123456789abcdef", DataDir: os.TempDir()})
		fmt.Println(err)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown helper %q\n", h)
	return 2
}

func TestReclaimAfterSIGKILL(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			before := snapshot(t)
			data := t.TempDir()
			port := nettest.FreePort(t)
			ports, _ := ParsePublish(fmt.Sprintf("127.0.0.1:%d:80", port))
			cfg, _ := json.Marshal(Config{Mode: m.mode, UserNet: m.userNet, ID: newID(t), DataDir: data, RuntimeDir: t.TempDir(), Ports: ports})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), testHelperEnv+"=crash", "FCVM_TEST_CONFIG="+string(cfg))
			cmd.Stderr = os.Stderr
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("helper: %v", err)
			}
			var rep crashReport
			if err := json.Unmarshal([]byte(line), &rep); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("helper said %q", line)
			}
			if !rep.Sleep.Alive() {
				t.Fatal("stand-in VMM not running")
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			// The parent-death signal takes the VMM down with the
			// supervisor.
			deadline := time.Now().Add(3 * time.Second)
			for rep.Sleep.Alive() {
				if time.Now().After(deadline) {
					syscall.Kill(rep.Sleep.PID, syscall.SIGKILL)
					t.Fatal("stand-in VMM outlived its supervisor")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err := Reclaim(rep.Net); err != nil {
				t.Fatalf("Reclaim: %v", err)
			}
			if err := Reclaim(rep.Net); err != nil {
				t.Fatalf("second Reclaim: %v", err)
			}
			for _, p := range []state.Process{rep.Net.Holder, rep.Net.Helper} {
				if p.Alive() {
					t.Errorf("%v still running", p)
				}
			}
			if rep.Net.Lease != "" {
				if _, err := os.Stat(rep.Net.Lease); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("lease %s left: %v", rep.Net.Lease, err)
				}
			}
			// The port is free again.
			if err := checkFree(ports); err != nil {
				t.Error(err)
			}
			checkGone(t, before)
		})
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			before := snapshot(t)
			ports, _ := ParsePublish(fmt.Sprintf("%d:80", port)) // all addresses overlap 127.0.0.1
			_, err := Setup(context.Background(), Config{Mode: m.mode, ID: newID(t), DataDir: t.TempDir(), RuntimeDir: t.TempDir(), Pool: testPool, Ports: ports})
			var pie *PortInUseError
			if !errors.Is(err, ErrPortInUse) || !errors.As(err, &pie) {
				t.Fatalf("Setup = %v, want ErrPortInUse", err)
			}
			if pie.PID != os.Getpid() || !strings.Contains(err.Error(), strconv.Itoa(port)) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
				t.Fatalf("error %q does not name port %d and pid %d", err, port, os.Getpid())
			}
			t.Log(err)
			checkGone(t, before)
		})
	}
}

func TestBridgedNeedsRoot(t *testing.T) {
	// Run the test binary as nobody: copy it where nobody can read it.
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	bin := filepath.Join(dir, "network.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	io.Copy(dst, src)
	src.Close()
	dst.Close()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), testHelperEnv+"=bridged", "TMPDIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "bridged mode needs root") || !strings.Contains(string(out), "--network rootless") {
		t.Fatalf("as nobody: %s", out)
	}
}

func TestNoUserNet(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Setup(context.Background(), Config{Mode: ModeRootless, ID: newID(t), RuntimeDir: t.TempDir()})
	if !errors.Is(err, ErrNoUserNet) || !strings.Contains(err.Error(), "apt-get install passt") {
		t.Fatalf("Setup without pasta and slirp4netns = %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	ports, _ := ParsePublish("8080:80")
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: "host", ID: "0123456789"}, "must be rootless, bridged, none or ns:PATH"},
		{Config{Mode: ModeNone, ID: "0123456789", Ports: ports}, "--network none"},
		{Config{Mode: ModeBridged, ID: "xyz"}, "shorter than 8"},
		{Config{Mode: ModeBridged, ID: "0123456789", DataDir: "/x", DNS: []string{"dns.example"}}, "not IP or IP:port"},
		{Config{Mode: ModeBridged, ID: "0123456789", DataDir: "/x", Pool: netip.MustParsePrefix("10.0.0.0/31")}, "at most /30"},
	} {
		if _, err := Setup(context.Background(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Setup(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestPoolExhausted(t *testing.T) {
	before := snapshot(t)
	data := t.TempDir()
	pool := netip.MustParsePrefix("10.67.250.0/29") // two blocks
	cfg := func() Config {
		return Config{Mode: ModeBridged, ID: newID(t), DataDir: data, Pool: pool, Log: testLog(t)}
	}
	var nets []*Network
	for i := 0; i < 2; i++ {
		n, err := Setup(context.Background(), cfg())
		if err != nil {
			t.Fatal(err)
		}
		nets = append(nets, n)
	}
	_, err := Setup(context.Background(), cfg())
	if !errors.Is(err, ErrPoolExhausted) || !strings.Contains(err.Error(), "--network rootless") {
		t.Fatalf("third Setup = %v, want ErrPoolExhausted", err)
	}
	t.Log(err)
	nets[0].Teardown()
	n, err := Setup(context.Background(), cfg())
	if err != nil {
		t.Fatalf("Setup after a teardown: %v", err)
	}
	if n.HostIP != nets[0].HostIP {
		t.Errorf("reused %s, want the freed %s", n.HostIP, nets[0].HostIP)
	}
	n.Teardown()
	nets[1].Teardown()
	checkGone(t, before)
}

func TestLeasesConcurrent(t *testing.T) {
	ls := leases{dir: t.TempDir()}
	pool := netip.MustParsePrefix("10.67.0.0/26") // 16 blocks
	var mu sync.Mutex
	got := map[int]bool{}
	var wg sync.WaitGroup
	var errs []error
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idx, _, err := ls.take(pool, lease{ID: fmt.Sprint(i), Owner: state.Self()}, func(lease) error { return nil })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if got[idx] {
				t.Errorf("block %d taken twice", idx)
			}
			got[idx] = true
		}()
	}
	wg.Wait()
	if len(got) != 16 || len(errs) != 4 || !errors.Is(errs[0], ErrPoolExhausted) {
		t.Fatalf("%d taken, errors %v", len(got), errs)
	}
	// A dead owner's block is reclaimed once the pool is full.
	dead := lease{ID: "dead", Owner: state.Process{PID: os.Getpid(), StartTime: 1}, Link: "x"}
	b, _ := json.Marshal(dead)
	os.WriteFile(ls.path(5), b, 0o644)
	var reclaimed []lease
	idx, _, err := ls.take(pool, lease{ID: "new", Owner: state.Self()}, func(l lease) error {
		reclaimed = append(reclaimed, l)
		return nil
	})
	if err != nil || idx != 5 || len(reclaimed) != 1 || reclaimed[0].ID != "dead" {
		t.Fatalf("take over dead lease = %d, %v, reclaimed %v", idx, err, reclaimed)
	}
}

// TestRandomHostPort: -p GUESTPORT gets a host port the kernel picks,
// written into the network's ports; bridged mode holds it from the bind
// on (nothing else can take it), and teardown frees it.
func TestRandomHostPort(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			before := snapshot(t)
			ports, err := ParsePublish("127.0.0.1::80")
			if err != nil {
				t.Fatal(err)
			}
			n, err := Setup(context.Background(), Config{Mode: m.mode, ID: newID(t), DataDir: t.TempDir(), RuntimeDir: t.TempDir(), Pool: testPool, Ports: ports, Log: testLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			if ports[0].HostPort != 0 {
				t.Errorf("Setup changed the caller's ports: %+v", ports)
			}
			p := n.Ports[0]
			if p.HostPort == 0 || p.GuestPort != 80 || p.HostIP != "127.0.0.1" {
				t.Fatalf("port after Setup: %+v, want a host port chosen", p)
			}
			if m.mode == ModeBridged {
				if ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", p.HostPort)); err == nil {
					ln.Close()
					t.Errorf("host port %d is not held by the network", p.HostPort)
				}
			}
			if err := n.Teardown(); err != nil {
				t.Fatal(err)
			}
			if err := checkFree([]Port{p}); err != nil {
				t.Errorf("after teardown: %v", err)
			}
			checkGone(t, before)
		})
	}
}
