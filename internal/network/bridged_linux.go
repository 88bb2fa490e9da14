package network

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/state"
)

const netnsDir = "/run/netns"

// setupBridged makes a bridged VM's network into n; on error the caller
// tears n down, so everything made is recorded in n before the next step.
func setupBridged(cfg Config, n *Network, lv *live, upstreams []netip.AddrPort) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: run fcvm as root, or use --network rootless", ErrNeedRoot)
	}
	// Bind the published ports first: a port in use fails before anything
	// is made, and holding them keeps them ours until teardown.
	// A port without a host port gets the one the kernel picked, held
	// from here on: no other process can take it before the rules exist.
	for i := range cfg.Ports {
		ln, pc, err := listen(&cfg.Ports[i])
		if err != nil {
			return err
		}
		lv.sockets = append(lv.sockets, sock{cfg.Ports[i], ln, pc})
	}

	pool := cfg.Pool
	if !pool.IsValid() {
		pool = DefaultPool
	}
	n.Link, n.Table = LinkName(n.ID), TableName(n.ID)
	nsName := NetNSName(n.ID)
	ls := leases{dir: filepath.Join(cfg.DataDir, "network")}
	idx, path, err := ls.take(pool, lease{ID: n.ID, Owner: state.Self(), Link: n.Link, Table: n.Table, NetNS: nsName}, reclaimLease)
	if err != nil {
		return err
	}
	n.Lease = path
	blk := blockAt(pool, idx)
	n.HostIP = blk.ns.String()

	// The namespace side, on a thread that lives in the new namespace
	// until it is done.
	n.NetNS = filepath.Join(netnsDir, nsName)
	var dnsConn net.PacketConn
	err = inNewNetNS(nsName, func(host netns.NsHandle) error {
		if err := configureGuestSide(cfg.guestVeth, 0); err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: n.Link, PeerNamespace: netlink.NsFd(int(host))}
		if err := netlink.LinkAdd(veth); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add veth %s: a link of that name exists (left by a crashed VM? run fcvm gc): %w", n.Link, err)
			}
			return fmt.Errorf("add veth %s: %w", n.Link, err)
		}
		a, _ := netlink.ParseAddr(netip.PrefixFrom(blk.ns, 30).String())
		if err := netlink.AddrAdd(veth, a); err != nil {
			return fmt.Errorf("address veth0: %w", err)
		}
		if err := netlink.LinkSetUp(veth); err != nil {
			return fmt.Errorf("set veth0 up: %w", err)
		}
		if err := netlink.RouteAdd(&netlink.Route{Gw: blk.host.AsSlice()}); err != nil {
			return fmt.Errorf("default route via %s: %w", blk.host, err)
		}
		c, err := nftables.New()
		if err != nil {
			return fmt.Errorf("nftables in the VM's namespace: %w", err)
		}
		bridgedNSTable(c, "veth0", blk.ns, blk.host, cfg.Ports)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("nftables in the VM's namespace: %w", err)
		}
		dnsConn, err = listenDNS()
		return err
	})
	if err != nil {
		return err
	}
	lv.closers = append(lv.closers, dnsConn)

	// The host side.
	link, err := netlink.LinkByName(n.Link)
	if err != nil {
		return fmt.Errorf("find %s: %w", n.Link, err)
	}
	a, _ := netlink.ParseAddr(netip.PrefixFrom(blk.host, 30).String())
	if err := netlink.AddrAdd(link, a); err != nil {
		return fmt.Errorf("address %s: %w", n.Link, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", n.Link, err)
	}
	// Strict reverse-path filtering on the VM's link (it goes with the
	// link): the host takes from it only what could be answered through
	// it. The host table's guard chain is what holds when the host's
	// conf/all/rp_filter makes this loose.
	rp := "/proc/sys/net/ipv4/conf/" + n.Link + "/rp_filter"
	if err := os.WriteFile(rp, []byte("1"), 0); err != nil {
		return fmt.Errorf("sysctl %s: %w", rp, err)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	hostTable(c, n.Table, n.Link, blk.net, blk.ns, cfg.Ports)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add nftables table ip %s: %w", n.Table, err)
	}
	changed, err := ls.enableForward()
	if err != nil {
		return err
	}
	if changed {
		cfg.Log.Info("turned on net.ipv4.ip_forward for bridged VMs", "marker", ls.markerPath())
	}

	fwd := newDNSForwarder(dnsConn, upstreams, cfg.Log)
	lv.start(fwd.serve)
	for _, s := range lv.sockets {
		lv.closers = append(lv.closers, newProxy(s.ln, s.pc, net.JoinHostPort(n.HostIP, strconv.Itoa(s.port.GuestPort)), cfg.Log))
	}
	lv.sockets = nil
	return nil
}

// inNewNetNS creates the named network namespace and runs fn on a thread
// inside it, then puts the thread back. If the thread cannot be put back,
// it stays locked so that the runtime retires it with its goroutine.
func inNewNetNS(name string, fn func(host netns.NsHandle) error) error {
	if err := sharedNetnsDir(); err != nil {
		return err
	}
	runtime.LockOSThread()
	host, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open host network namespace: %w", err)
	}
	defer host.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		// NewNamed may fail after unshare: try to go home.
		if netns.Set(host) == nil {
			runtime.UnlockOSThread()
		}
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create network namespace %s: it exists (left by a crashed VM? run fcvm gc): %w", name, err)
		}
		return fmt.Errorf("create network namespace %s: %w", name, err)
	}
	defer ns.Close()
	fnErr := fn(host)
	if err := netns.Set(host); err != nil {
		return fmt.Errorf("return to host network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// inNetNS runs fn on a thread inside the network namespace at path.
func inNetNS(path string, fn func() error) error {
	runtime.LockOSThread()
	host, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open host network namespace: %w", err)
	}
	defer host.Close()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	fnErr := fn()
	if err := netns.Set(host); err != nil {
		return fmt.Errorf("return to host network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// removeBridged removes what a bridged network made on the host. Each step
// treats "already gone" as success.
func removeBridged(link, table, nsName string) error {
	var errs []error
	if table != "" {
		c, err := nftables.New()
		if err == nil {
			err = deleteTable(c, table)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if link != "" {
		if l, err := netlink.LinkByName(link); err == nil {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", link, err))
			}
		}
	}
	if nsName != "" {
		p := filepath.Join(netnsDir, nsName)
		if err := unmountAll(p); err != nil {
			errs = append(errs, fmt.Errorf("unmount network namespace %s: %w", p, err))
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove network namespace %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// sharedNetnsDir makes /run/netns a mount point of its own with shared
// propagation, as iproute2 and podman do before they add a namespace. If
// fcvm bound its namespaces on the plain directory, the first `ip netns
// add` or podman container with a network would bind the directory over
// them, and their files could no longer be unmounted or removed.
func sharedNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("make %s: %w", netnsDir, err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it on itself (with whatever is
		// mounted in it already), then share it.
		if err = unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
	}
	return nil
}

// unmountAll unmounts every mount stacked on p. When /run/netns is a
// shared mount that is its own peer (what `ip netns add` makes of it), a
// namespace bound there shows up twice at the same path, and one unmount
// leaves the file busy.
func unmountAll(p string) error {
	for range 16 {
		err := unix.Unmount(p, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not (or no longer) a mount point
		}
		if err != nil {
			return err
		}
	}
	return errors.New("still mounted after 16 unmounts")
}

// reclaimLease removes a dead owner's leftovers before its block is reused.
func reclaimLease(le lease) error { return removeBridged(le.Link, le.Table, le.NetNS) }
