package e2e

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// testNetNS: a VM joins (--network ns:PATH) a namespace made as CNI makes
// a pod's, a veth to the host with an address and a default route through
// it. The host reaches the container at the namespace's address, TCP and
// UDP; the container reaches the host through the namespace's route; a
// snapshot is refused; rm leaves the namespace as it found it; and what
// cannot work is refused before anything is made.
func testNetNS(t *testing.T, ref string) {
	pod := netServerNS(t, 2)
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(pod.ns))
	hostSide := pod.addr.Prev() // the host's end of the pod's veth
	h, err := netlink.NewHandleAt(pod.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// An overlay network's MTU, which the guest must take too.
	if err := h.LinkSetMTU(eth, 1400); err != nil {
		t.Fatal(err)
	}

	t.Run("bad-input", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--network", "ns:/run/netns/fcvm-e2e-no-such-ns"}, "give the path of a network namespace"},
			{[]string{"--network", "ns:relative/path"}, "absolute, clean path"},
			{[]string{"--network", "ns:" + path, "-p", "8080:80"}, "-p with --network ns:PATH"},
		} {
			name := uniqueName(t, "bad")
			r := netRun(t, nil, append(append([]string{"run", "--rm", "--name", name}, tc.args...), ref, "true")...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("run %v: want an error saying %q\n%s", tc.args, tc.want, r)
			}
			if rec := netLS(t, name); rec != nil {
				t.Errorf("run %v left a VM record: %+v", tc.args, rec)
			}
		}
	})

	secret := fmt.Sprintf("reached-%d", time.Now().UnixNano())
	ln, err := net.Listen("tcp4", net.JoinHostPort(hostSide.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serveText(t, ln, secret)

	name := uniqueName(t, "vm")
	r := netRun(t, nil, "run", "-d", "--name", name, "--network", "ns:"+path,
		"-e", "ID=N", "-e", "UDP=7", ref, "sh", "-c", netServeScript)
	t.Cleanup(func() { netRun(t, nil, "rm", "-f", name) })
	if r.code != 0 {
		t.Fatalf("run --network ns:%s: %s", path, r)
	}
	rec := netLS(t, name)
	if rec == nil || rec.Network.GuestIP != pod.addr.String() || rec.Network.Mode != "ns:"+path {
		t.Fatalf("ls --json: %+v, want guest IP %s and mode ns:%s", rec, pod.addr, path)
	}
	if _, err := h.LinkByName("tap0"); err != nil {
		t.Errorf("no tap0 in the joined namespace: %v", err)
	}

	if got := httpGet(t, "http://"+pod.addr.String()+":80/"); got != "N\n" {
		t.Errorf("GET at the namespace's address: %q, want %q", got, "N\n")
	}
	if got := udpEchoAt(t, pod.addr.String()+":7", "ping"); got != "N:ping" {
		t.Errorf("UDP echo at the namespace's address: %q, want %q", got, "N:ping")
	}
	r = netRun(t, nil, "exec", name, "wget", "-q", "-O", "-", fmt.Sprintf("http://%s/", ln.Addr()))
	if r.code != 0 || r.stdout != secret {
		t.Errorf("container fetching the host's page through the namespace's route (want %q): %s", secret, r)
	}
	if r := netRun(t, nil, "exec", name, "cat", "/sys/class/net/eth0/mtu"); r.stdout != "1400\n" {
		t.Errorf("guest MTU: want the namespace interface's 1400, got %s", r)
	}
	r = netRun(t, nil, "snapshot", "create", name, "--tag", name)
	if r.code == 0 || !strings.Contains(r.stderr, "joined the network namespace") {
		t.Errorf("snapshot of a VM in a joined namespace: want an error saying why\n%s", r)
		netRun(t, nil, "snapshot", "rm", "-f", name)
	}

	if r := netRun(t, nil, "rm", "-f", name); r.code != 0 {
		t.Fatalf("rm -f: %s", r)
	}
	if _, err := h.LinkByName("tap0"); err == nil {
		t.Errorf("tap0 left in the joined namespace after rm")
	}
	if qs, _ := h.QdiscList(eth); slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "ingress" }) {
		t.Errorf("ingress qdisc left on the namespace's eth0 after rm: %v", qs)
	}
	if addrs, _ := h.AddrList(eth, netlink.FAMILY_V4); len(addrs) != 1 || !addrs[0].IP.Equal(pod.addr.AsSlice()) {
		t.Errorf("the namespace's eth0 after rm has %v, want %s alone", addrs, pod.addr)
	}
}
