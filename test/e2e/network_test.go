package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/vishvananda/netns"

	"github.com/fcvm/fcvm/internal/dnstest"
	"github.com/fcvm/fcvm/internal/imagetest"
	"github.com/fcvm/fcvm/internal/nettest"
	"github.com/fcvm/fcvm/internal/network"
)

// netPool is where this file's bridged VMs take their addresses
// (FCVM_BRIDGE_POOL), off the default pool and off the network package's
// tests: two blocks, so that the pair of VMs exhausts it. (Leases are
// named by block number whatever the pool, so one pool for all: a VM of
// another pool in the same data dir would take a block of this one.)
const netPool = "10.68.0.0/29"

// The test's own name, served by its DNS server to the guests.
const netTestName = "svc.fcvm-e2e.test."

// TestNetwork boots, in each mode, two VMs at once that serve HTTP and UDP
// echo on published ports, and a third whose supervisor is killed; it
// checks what the guest reaches (a server of the test's, a name of the
// test's DNS server), the health checks, that stop, rm -f and gc remove
// everything the network made, and every bad input.
func TestNetwork(t *testing.T) {
	needSetup(t)
	ref := netImage(t)
	before := nettest.HostState(t)
	var mu sync.Mutex
	var ours []netVMState // every VM the subtests made, for the final check
	remember := func(s netVMState) { mu.Lock(); ours = append(ours, s); mu.Unlock() }
	t.Cleanup(func() {
		after := nettest.HostState(t)
		t.Logf("host before: %s", before)
		t.Logf("host after:  %s", after)
		for _, s := range ours {
			if left := s.leftovers(after); len(left) > 0 {
				t.Errorf("after the test, VM %s (%s) left %v", s.name, s.id[:12], left)
			}
		}
		if extra := after.Minus(before); !extra.Empty() {
			t.Logf("new on the host since the test started (ours are checked above; the rest may be other tests'): %s", extra)
		}
	})
	// Bad input first and alone: its bridged runs take address leases
	// for a moment, and the pool test below counts on every lease being
	// the pair's.
	t.Run("bad-input", func(t *testing.T) { testNetBadInput(t, ref) })
	for _, mode := range []string{network.ModeRootless, network.ModeBridged} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testNetMode(t, ref, mode, remember)
		})
	}
	t.Run("ns", func(t *testing.T) {
		t.Parallel()
		testNetNS(t, ref)
	})
}

// netImage is busybox plus a static UDP echo server (Debian's busybox nc
// has no UDP), built from source here.
func netImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "udpecho.go")
	if err := os.WriteFile(src, []byte(udpEchoSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "udpecho")
	build := exec.Command("go", "build", "-o", bin, src)
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build udpecho: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	layer := imagetest.Layer(t, imagetest.Entry{Name: "bin/udpecho", Mode: 0o755, Body: string(b)})
	path := filepath.Join(dir, "net.tar")
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, imagetest.Options{ExtraLayers: []v1.Layer{layer}}), path)
	return "oci-archive:" + path
}

// udpEchoSource answers each datagram on :PORT with "ID:" and the
// datagram, so a reply says which VM it came from.
const udpEchoSource = `package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	pc, err := net.ListenPacket("udp4", ":"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			os.Exit(1)
		}
		pc.WriteTo(append([]byte(os.Args[2]+":"), buf[:n]...), from)
	}
}
`

// netServeScript writes the VM's identity as the page, starts the UDP echo
// and serves HTTP on 80, logging each URL to stderr (httpd -vv).
const netServeScript = `mkdir -p /www && echo "$ID" > /www/index.html && { /bin/udpecho "$UDP" "$ID" & } && exec httpd -f -vv -p 80 -h /www`

// netRun runs fcvm with extra environment (after the harness's, so it
// wins) until it exits.
func netRun(t *testing.T, env []string, args ...string) result {
	t.Helper()
	// Not t.Context(): cleanups use this too, after it is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := fcvmCmd(ctx, dataDir, args...)
	cmd.Env = append(cmd.Env, env...)
	return netWait(t, cmd, args)
}

func netWait(t *testing.T, cmd *exec.Cmd, args []string) result {
	t.Helper()
	return runCmd(t, cmd, args)
}

// netVM is one VM of a mode's test and the ports it publishes.
type netVM struct {
	name, id      string
	ident         string // its page and its UDP echo prefix
	http, udp     int    // host ports (UDP: the same port in the guest)
	healthArgs    []string
	wantUnhealthy bool
}

func testNetMode(t *testing.T, ref, mode string, remember func(netVMState)) {
	env := []string{"FCVM_BRIDGE_POOL=" + netPool}

	// What the guest should reach: a name of our DNS server, resolving to
	// an HTTP server of ours in a namespace behind the host, one per mode
	// (the host's loopback is closed to rootless guests:
	// TestNetworkIsolation).
	secret := fmt.Sprintf("reached-%d", time.Now().UnixNano())
	i := 0
	if mode == network.ModeRootless {
		i = 1
	}
	ns := netServerNS(t, i)
	ln := ns.listen(t, ns.addr.String()+":0")
	srvAddr, srvPort := ns.addr, ln.Addr().(*net.TCPAddr).Port
	serveText(t, ln, secret)
	dns := netDNSServer(t, map[string]netip.Addr{netTestName: srvAddr})
	env = append(env, "FCVM_DNS="+dns)

	// First a VM whose supervisor is killed once its network exists; gc
	// must reclaim all of it. It costs little: its VMM dies with it.
	remember(netKillAndGC(t, ref, mode))

	vms := []*netVM{{ident: "A"}, {ident: "B"}}
	for _, vm := range vms {
		vm.name = uniqueName(t, vm.ident)
		vm.http, vm.udp = nettest.FreePort(t), nettest.FreePort(t)
	}
	// Health: A by URL from the host, B by command in the container;
	// in rootless mode B's command fails, so --wait-healthy must fail.
	vms[0].healthArgs = []string{"--health-url", "http://guest:80/", "--health-interval", "2s"}
	if mode == network.ModeBridged {
		vms[1].healthArgs = []string{"--health-cmd", "test -s /www/index.html", "--health-interval", "2s"}
	} else {
		vms[1].healthArgs = []string{"--health-cmd", "test -f /no/such/file", "--health-interval", "1s", "--health-retries", "2"}
		vms[1].wantUnhealthy = true
	}
	var wg sync.WaitGroup
	results := make([]result, len(vms))
	for i, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []string{"run", "-d", "--name", vm.name, "--network", mode, "--wait-healthy",
				"-p", fmt.Sprintf("127.0.0.1:%d:80", vm.http),
				"-p", fmt.Sprintf("127.0.0.1:%d:%d/udp", vm.udp, vm.udp),
				"-e", "ID=" + vm.ident, "-e", "UDP=" + strconv.Itoa(vm.udp)}
			args = append(append(args, vm.healthArgs...), ref, "sh", "-c", netServeScript)
			results[i] = netRun(t, env, args...)
		}()
	}
	wg.Wait()
	for _, vm := range vms {
		t.Cleanup(func() { netRun(t, nil, "rm", "-f", vm.name) })
	}
	for i, vm := range vms {
		r := results[i]
		if vm.wantUnhealthy {
			if r.code == 0 || !strings.Contains(r.stderr, "unhealthy") || !strings.Contains(r.stderr, "fcvm rm -f "+vm.name) {
				t.Errorf("run -d --wait-healthy of %s with a failing --health-cmd: want an error saying unhealthy and how to remove it\n%s", vm.name, r)
			}
		} else if r.code != 0 {
			t.Fatalf("run %s: %s", vm.name, r)
		}
		rec := netLS(t, vm.name)
		if rec == nil || rec.Status != "running" {
			t.Fatalf("VM %s is not running: %+v", vm.name, rec)
		}
		vm.id = rec.ID
		want := "healthy"
		if vm.wantUnhealthy {
			want = "unhealthy"
		}
		if rec.Health != want {
			t.Errorf("ls --json: health of %s is %q, want %q", vm.name, rec.Health, want)
		}
	}
	if r := netRun(t, nil, "ls"); !strings.Contains(r.stdout, "HEALTH") || !strings.Contains(r.stdout, "healthy") {
		t.Errorf("fcvm ls shows no HEALTH column:\n%s", r.stdout)
	}
	states := make([]netVMState, len(vms))
	for i, vm := range vms {
		states[i] = readNetVMState(t, vm.name, vm.id)
		remember(states[i])
		if s := states[i]; len(s.leftovers(nettest.HostState(t))) == 0 {
			t.Errorf("VM %s: found none of its network on the host (%+v): the leftover checks would prove nothing", vm.name, s)
		}
	}

	// Both VMs have the same guest address and answer as themselves, on
	// their own ports, TCP and UDP.
	for _, vm := range vms {
		if got := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", vm.http)); got != vm.ident+"\n" {
			t.Errorf("GET through %s's port %d: %q, want %q", vm.name, vm.http, got, vm.ident+"\n")
		}
		if got := udpEcho(t, vm.udp, "ping"); got != vm.ident+":ping" {
			t.Errorf("UDP echo through %s's port %d: %q, want %q", vm.name, vm.udp, got, vm.ident+":ping")
		}
	}
	probes := map[string]string{}
	for _, vm := range vms {
		probes[vm.name] = fmt.Sprintf("probe-%s-%d", vm.ident, time.Now().UnixNano())
		httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/%s", vm.http, probes[vm.name]))
	}
	// Neither sees the other's traffic: each httpd logged only its own
	// probe.
	time.Sleep(time.Second)
	for _, vm := range vms {
		r := netRun(t, nil, "logs", vm.name)
		for _, other := range vms {
			saw := strings.Contains(r.stdout+r.stderr, "url:/"+probes[other.name])
			if want := other.name == vm.name; saw != want {
				t.Errorf("logs of %s: saw the probe sent to %s: %v, want %v\n%s", vm.name, other.name, saw, want, r)
			}
		}
	}
	// Guest DNS and egress: the name resolves through the VM's forwarder
	// to our server's address, and the page comes from our server.
	a := vms[0]
	// wget fetches by address, so that only nslookup depends on the
	// forwarder, and without -T, which crashes Debian's busybox 1.35
	// wget (SIGSEGV). nslookup asks for A only, the record under test:
	// by default it also asks AAAA, and it gives up on both after 5 s,
	// which a starved guest can spend on the AAAA answer alone (CI once
	// printed only the AAAA reply and "No answer").
	script := fmt.Sprintf("nslookup -type=a %s && timeout 20 wget -q -O - http://%s:%d/", strings.TrimSuffix(netTestName, "."), srvAddr, srvPort)
	r := netRun(t, nil, "exec", a.name, "sh", "-c", script)
	if r.code != 0 || !strings.Contains(r.stdout, srvAddr.String()) || !strings.HasSuffix(r.stdout, secret) {
		t.Errorf("guest resolving %s (want %s) and fetching our server's page (want %q): %s", netTestName, srvAddr, secret, r)
	}

	// More VMs than the pool allows: the pair holds both blocks.
	if mode == network.ModeBridged {
		r := netRun(t, env, "run", "--rm", "--network", mode, ref, "true")
		if r.code == 0 || !strings.Contains(r.stderr, "in use by running VMs") || !strings.Contains(r.stderr, netPool) {
			t.Errorf("a third bridged VM in a pool of two: want an error naming the pool\n%s", r)
		}
	}

	// stop: everything A's network made is gone, the record stays.
	if r := netRun(t, nil, "stop", "-t", "2", a.name); r.code != 0 {
		t.Errorf("stop %s: %s", a.name, r)
	}
	netWaitGone(t, states[0])
	if rec := netLS(t, a.name); rec == nil || rec.Status != "exited" {
		t.Errorf("after stop, %s: %+v, want an exited record", a.name, rec)
	}
	// rm -f of a running VM: the same, and the record goes.
	b := vms[1]
	if r := netRun(t, nil, "rm", "-f", b.name); r.code != 0 {
		t.Errorf("rm -f %s: %s", b.name, r)
	}
	netWaitGone(t, states[1])
	if netLS(t, b.name) != nil {
		t.Errorf("record of %s still there after rm -f", b.name)
	}
	for _, vm := range vms {
		netPortFree(t, vm.http, vm.udp)
	}
}

// netKillAndGC starts a VM in the foreground, SIGKILLs its supervisor once
// its network exists, and checks that fcvm gc removes all of it.
func netKillAndGC(t *testing.T, ref, mode string) netVMState {
	name := uniqueName(t, "killed")
	port := nettest.FreePort(t)
	cmd := fcvmCmd(t.Context(), dataDir, "run", "--name", name, "--network", mode, "-p", fmt.Sprintf("127.0.0.1:%d:80", port), ref, "httpd", "-f", "-p", "80")
	cmd.Env = append(cmd.Env, "FCVM_BRIDGE_POOL="+netPool)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netRun(t, nil, "rm", "-f", name) })
	var rec *netRecord
	deadline := time.Now().Add(3 * time.Minute)
	for rec == nil || rec.Status != "running" {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%s never running; output:\n%s", name, out.String())
		}
		time.Sleep(200 * time.Millisecond)
		rec = netLS(t, name)
	}
	st := readNetVMState(t, name, rec.ID)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if rec := netLS(t, name); rec == nil || rec.Status != "dead" {
		t.Errorf("after SIGKILL of its supervisor, %s: %+v, want dead", name, rec)
	}
	t.Logf("%s after SIGKILL, before gc: %v", name, st.leftovers(nettest.HostState(t)))
	// Other tests run gc too and may reclaim this VM first: what matters
	// is that gc succeeds and the VM is no longer dead afterwards.
	if r := netRun(t, nil, "gc"); r.code != 0 {
		t.Errorf("gc after SIGKILL: %s", r)
	}
	if rec := netLS(t, name); rec != nil && rec.Status == "dead" {
		t.Errorf("after gc, %s is still dead: %+v", name, rec)
	}
	netWaitGone(t, st)
	netPortFree(t, port, 0)
	return st
}

func testNetBadInput(t *testing.T, ref string) {
	bad := func(t *testing.T, env []string, want []string, args ...string) {
		t.Helper()
		name := uniqueName(t, "bad")
		args = append([]string{"run", "--rm", "--name", name}, args...)
		r := netRun(t, env, args...)
		if r.code == 0 {
			t.Errorf("fcvm %v succeeded", args)
			return
		}
		msg := strings.TrimSpace(r.stderr)
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("fcvm %v: error %q does not say %q", args, msg, w)
			}
		}
		if n := strings.Count(msg, "\n"); n > 0 {
			t.Errorf("fcvm %v: error is %d lines, want one:\n%s", args, n+1, msg)
		}
		if netLS(t, name) != nil {
			t.Errorf("fcvm %v left a record", args)
		}
	}

	t.Run("port-in-use", func(t *testing.T) {
		for _, mode := range []string{network.ModeRootless, network.ModeBridged} {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			bad(t, []string{"FCVM_BRIDGE_POOL=" + netPool},
				[]string{strconv.Itoa(port), "already in use", "pid " + strconv.Itoa(os.Getpid())},
				"--network", mode, "-p", fmt.Sprintf("127.0.0.1:%d:80", port), ref, "true")
			ln.Close()
		}
	})
	t.Run("malformed-publish", func(t *testing.T) {
		for _, spec := range []string{"8080:", "8080:80/sctp", "http:80", "127.0.0.1:70000:80", "1.2.3:8080:80", "8080-8081:80"} {
			bad(t, nil, []string{spec, "HOSTPORT:GUESTPORT"}, "-p", spec, ref, "true")
		}
	})
	t.Run("bridged-without-root", func(t *testing.T) {
		// A data and runtime dir nobody may use, so that only the
		// network can be what fails.
		nobody := filepath.Join(t.TempDir(), "nobody")
		data, run := filepath.Join(nobody, "data"), filepath.Join(nobody, "run")
		for _, d := range []string{nobody, data, run} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			os.Chown(d, 65534, 65534)
		}
		os.Chmod(filepath.Dir(nobody), 0o755)
		if err := os.Chmod(binDir, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := fcvmCmd(t.Context(), data, "run", "--rm", "--network", "bridged", "-p", "127.0.0.1:18099:80", ref, "true")
		cmd.Env = append(cmd.Env, "FCVM_RUNTIME_DIR="+run, "HOME="+nobody)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		r := netWait(t, cmd, cmd.Args[1:])
		if r.code == 0 || !strings.Contains(r.stderr, "bridged mode needs root") || !strings.Contains(r.stderr, "--network rootless") {
			t.Errorf("bridged as uid 65534: want an error saying it needs root and suggesting rootless\n%s", r)
		}
	})
	t.Run("no-user-net", func(t *testing.T) {
		// PATH with everything but pasta and slirp4netns.
		dir := t.TempDir()
		for _, d := range filepath.SplitList(os.Getenv("PATH")) {
			ents, _ := os.ReadDir(d)
			for _, e := range ents {
				n := e.Name()
				if strings.HasPrefix(n, "pasta") || strings.HasPrefix(n, "passt") || n == "slirp4netns" {
					continue
				}
				os.Symlink(filepath.Join(d, n), filepath.Join(dir, n))
			}
		}
		bad(t, []string{"PATH=" + dir}, []string{"pasta", "slirp4netns", "apt-get install"},
			"--network", "rootless", ref, "true")
	})
	t.Run("health-flags", func(t *testing.T) {
		bad(t, nil, []string{"--health-url", "not published"}, "--health-url", "http://guest:8080/", "-p", fmt.Sprintf("127.0.0.1:%d:80", nettest.FreePort(t)), ref, "true")
		bad(t, nil, []string{"--health-url", "http://"}, "--health-url", "ftp://guest/", ref, "true")
		bad(t, nil, []string{"--health-retries"}, "--health-cmd", "true", "--health-retries", "0", ref, "true")
		bad(t, nil, []string{"--wait-healthy", "-d"}, "--wait-healthy", "--health-cmd", "true", ref, "true")
	})
}

// netRecord is the part of ls --json the network tests read.
type netRecord struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Health  string `json:"health"`
	Network struct {
		Mode    string `json:"mode"`
		GuestIP string `json:"guest_ip"`
	} `json:"network"`
}

func netLS(t *testing.T, name string) *netRecord {
	t.Helper()
	cmd := fcvmCmd(t.Context(), dataDir, "ls", "-a", "--json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fcvm ls: %v", err)
	}
	var recs []netRecord
	if err := json.Unmarshal(out, &recs); err != nil {
		t.Fatalf("decode ls --json: %v\n%s", err, out)
	}
	for _, r := range recs {
		if r.Name == name {
			return &r
		}
	}
	return nil
}

// netVMState is what one VM's network made on the host, from its
// network.json: names derived from its ID and its helper processes.
type netVMState struct {
	name, id string
	net      *network.Network
}

func readNetVMState(t *testing.T, name, id string) netVMState {
	t.Helper()
	s := netVMState{name: name, id: id, net: &network.Network{}}
	b, err := os.ReadFile(filepath.Join(dataDir, "vms", id, "network.json"))
	if err != nil {
		t.Fatalf("network state of %s: %v", name, err)
	}
	if err := json.Unmarshal(b, s.net); err != nil {
		t.Fatalf("network state of %s: %v", name, err)
	}
	return s
}

// leftovers lists what of s is still on the host h.
func (s netVMState) leftovers(h nettest.Host) []string {
	var left []string
	id8 := s.id[:8]
	for _, want := range []struct{ kind, name string }{
		{"netns", network.NetNSName(s.id)},
		{"link", network.LinkName(s.id)},
		{"nftables table", network.TableName(s.id)},
	} {
		var in []string
		switch want.kind {
		case "netns":
			in = h.NetNS
		case "link":
			in = h.Links
		default:
			in = h.Tables
		}
		if slices.Contains(in, want.name) {
			left = append(left, want.kind+" "+want.name)
		}
	}
	for _, p := range []struct {
		what string
		pid  int
		ok   bool
	}{{"holder", s.net.Holder.PID, s.net.Holder.Alive()}, {"helper " + s.net.UserNet, s.net.Helper.PID, s.net.Helper.Alive()}} {
		if p.ok {
			left = append(left, fmt.Sprintf("%s pid %d", p.what, p.pid))
		}
	}
	for _, p := range h.Helpers {
		if strings.Contains(p, id8) {
			left = append(left, "process "+p)
		}
	}
	return left
}

// netWaitGone waits a little for s's leftovers to go (teardown is done
// by the time the command returns, but a killed helper may still be
// exiting), then reports them.
func netWaitGone(t *testing.T, s netVMState) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := s.leftovers(nettest.HostState(t))
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("VM %s (%s) left %v", s.name, s.id[:12], left)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// netPortFree checks that nothing holds the published ports any more.
func netPortFree(t *testing.T, tcp, udp int) {
	t.Helper()
	if ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", tcp)); err != nil {
		t.Errorf("TCP port %d still held: %v", tcp, err)
	} else {
		ln.Close()
	}
	if udp == 0 {
		return
	}
	if pc, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", udp)); err != nil {
		t.Errorf("UDP port %d still held: %v", udp, err)
	} else {
		pc.Close()
	}
}

func serveText(t *testing.T, ln net.Listener, text string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, text) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// httpGet fetches url from the host, retrying briefly: a published port
// answers as soon as its VM's server does.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	var err error
	for range 5 {
		var resp *http.Response
		if resp, err = c.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		time.Sleep(time.Second)
	}
	t.Errorf("GET %s: %v", url, err)
	return ""
}

func udpEcho(t *testing.T, port int, msg string) string {
	t.Helper()
	return udpEchoAt(t, fmt.Sprintf("127.0.0.1:%d", port), msg)
}

// udpEchoAt sends msg to addr until an answer comes, for 10 s; "" if none
// does.
func udpEchoAt(t *testing.T, addr, msg string) string {
	t.Helper()
	c, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for range 10 {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	return ""
}

// netDNSServer answers A queries for names on 127.0.0.1:random and
// NXDOMAIN for the rest; it returns its address for FCVM_DNS.
func netDNSServer(t *testing.T, answers map[string]netip.Addr) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnstest.Serve(t, pc, answers)
	return pc.LocalAddr().String()
}

// netNS is a network namespace of the test's, behind the host on the link
// fce2e<i> (host 10.98.0.4i+1/30, namespace addr 10.98.0.4i+2/30): a
// machine the guest reaches through the host. Tests running at the same
// time use different i.
type netNS struct {
	ns   netns.NsHandle
	addr netip.Addr
}

func netServerNS(t *testing.T, i int) *netNS {
	t.Helper()
	ns, addr := nettest.ServerNS(t, fmt.Sprintf("fce2e%d", i), netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 98, 0, byte(4*i + 1)}), 30))
	return &netNS{ns: ns, addr: addr}
}

// do runs fn on a thread inside the namespace: sockets made there stay
// there.
func (n *netNS) do(t *testing.T, fn func() error) {
	t.Helper()
	if err := nettest.Do(n.ns, fn); err != nil {
		t.Fatal(err)
	}
}

// listen opens a TCP listener inside the namespace; it stays there.
func (n *netNS) listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	n.do(t, func() (err error) { ln, err = net.Listen("tcp4", addr); return err })
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenPacket opens a UDP socket inside the namespace; it stays there.
func (n *netNS) listenPacket(t *testing.T, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	n.do(t, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err })
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestNetworkIsolation: what a hostile guest cannot reach. Rootless: the
// host's loopback through the gateway, unless --network pasta:--map-gw
// opens it. Bridged: another VM, and anything with a forged source
// address. Run it alone (-run TestNetworkIsolation): its bridged pair
// takes both blocks of netPool, as TestNetwork's does.
func TestNetworkIsolation(t *testing.T) {
	needSetup(t)
	ref := netImage(t)
	t.Run("rootless-host-loopback", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		secret := fmt.Sprintf("loopback-%d", time.Now().UnixNano())
		serveText(t, ln, secret)
		url := fmt.Sprintf("http://%s:%d/", network.HostLoopbackIP, ln.Addr().(*net.TCPAddr).Port)
		var wg sync.WaitGroup
		for _, tc := range []struct {
			network string
			open    bool
		}{{"rootless", false}, {"pasta:--map-gw", true}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := uniqueName(t, "lo")
				if r := netRun(t, nil, "run", "-d", "--name", name, "--network", tc.network, ref, "sleep", "3600"); r.code != 0 {
					t.Errorf("run --network %s: %s", tc.network, r)
					return
				}
				defer netRun(t, nil, "rm", "-f", name)
				r := netRun(t, nil, "exec", name, "sh", "-c", "timeout 15 wget -q -O - "+url)
				reached := r.code == 0 && strings.Contains(r.stdout, secret)
				if reached != tc.open {
					t.Errorf("--network %s: guest fetching %s (the host's 127.0.0.1): reached %v, want %v\n%s", tc.network, url, reached, tc.open, r)
				}
			}()
		}
		wg.Wait()
	})
	t.Run("bridged", func(t *testing.T) {
		t.Parallel()
		env := []string{"FCVM_BRIDGE_POOL=" + netPool}
		// A listener behind the host that records every datagram.
		ns := netServerNS(t, 2)
		pc := ns.listenPacket(t, ns.addr.String()+":9000")
		var mu sync.Mutex
		var got []string
		go func() {
			buf := make([]byte, 100)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				mu.Lock()
				got = append(got, strings.TrimSpace(string(buf[:n]))+" from "+from.String())
				mu.Unlock()
			}
		}()
		names := []string{uniqueName(t, "isoA"), uniqueName(t, "isoB")}
		var wg sync.WaitGroup
		results := make([]result, 2)
		for i, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = netRun(t, env, "run", "-d", "--name", name, "--network", "bridged",
					"-e", "ID="+name, "-e", "UDP=7", ref, "sh", "-c", netServeScript)
			}()
		}
		wg.Wait()
		for i, name := range names {
			t.Cleanup(func() { netRun(t, nil, "rm", "-f", name) })
			if results[i].code != 0 {
				t.Fatalf("run %s: %s", name, results[i])
			}
		}
		a, b := names[0], names[1]
		bNet := readNetVMState(t, b, netLS(t, b).ID).net
		// The host reaches B; A does not.
		if got := httpGet(t, "http://"+bNet.HostIP+":80/"); got != b+"\n" {
			t.Errorf("host fetching B at %s: %q, want %q", bNet.HostIP, got, b+"\n")
		}
		r := netRun(t, nil, "exec", a, "sh", "-c", "timeout 15 wget -q -O - http://"+bNet.HostIP+":80/")
		if r.code == 0 || strings.Contains(r.stdout, b) {
			t.Errorf("guest A fetching B's page at %s: reached it\n%s", bNet.HostIP, r)
		}
		// A, as root in its VM, sends from a forged address (and then
		// from its own): only its own arrives.
		script := strings.ReplaceAll(`ip addr add 10.98.7.7/32 dev lo && ip route add SRV/32 via 172.30.0.1 src 10.98.7.7 &&
for i in 1 2 3; do echo forged > /dev/udp/SRV/9000; done
ip route del SRV/32
for i in 1 2 3 4 5; do echo legit > /dev/udp/SRV/9000; sleep 0.3; done`, "SRV", ns.addr.String())
		if r := netRun(t, nil, "exec", "--vm", a, "bash", "-c", script); r.code != 0 {
			t.Fatalf("guest A sending datagrams: %s", r)
		}
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		legit := false
		for _, g := range got {
			legit = legit || strings.HasPrefix(g, "legit ")
			if strings.HasPrefix(g, "forged ") {
				t.Errorf("arrived: %s (a forged source got out)", g)
			}
		}
		if !legit {
			t.Errorf("no datagram from the guest's own address arrived: %v", got)
		}
	})
}
