package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// A pod VM (containerd's CRI pod sandbox) runs more containers than its
// own: members, started by name once the VM's container (the pod's
// sandbox) runs. Each member's image is a read-only ext4 disk the host
// writes into one of the VM's spare slot disks before it starts the
// member (a microVM cannot hot-plug disks; Firecracker's and
// firecracker-containerd's answer too); the member's root is that image
// overlaid with directories on the VM's writable disk. A member joins the
// network, IPC and UTS namespaces of the VM's container, as the
// containers of a Kubernetes pod share the sandbox's, and sees its
// /etc/hosts, /etc/hostname and /etc/resolv.conf; its PID, mount and
// cgroup namespaces are its own. Members exec through crun (the zygote
// stands in the VM's container only).

const (
	// podDir holds the members' bundles (tmpfs).
	podDir = "/run/fcvm-pod"
	// podDiskDir holds the members' upper and work directories.
	podDiskDir = upperMount + "/pod"
	// maxMembers bounds the members a VM keeps, exited ones included
	// until removed.
	maxMembers = 16
	// slotWait bounds the wait for a slot disk's device.
	slotWait = 10 * time.Second
)

// memberName is what a member may be called: a CRI container ID (64 hex
// digits) fits, a path does not.
var memberName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// member is one pod member and the slot its image is on.
type member struct {
	c    *container
	slot string
}

func (a *Agent) startMember(name string, p *channel.Plan, conn net.Conn) error {
	if p == nil {
		return errors.New("start pod member: no plan")
	}
	c, already, err := a.launchMember(name, p)
	if err != nil {
		return err
	}
	return a.replyStarted(c, already, conn)
}

// launchMember starts member name from p unless it exists already.
func (a *Agent) launchMember(name string, p *channel.Plan) (*container, bool, error) {
	if !memberName.MatchString(name) || name == containerName {
		return nil, false, fmt.Errorf("pod member %q: a name of letters, digits, '_', '.' and '-', at most 128", name)
	}
	if !memberName.MatchString(p.Slot) {
		return nil, false, fmt.Errorf("pod member %s: slot disk %q: not a disk name", name, p.Slot)
	}
	a.mu.Lock()
	first, plan := a.ctr, a.plan
	a.mu.Unlock()
	if first == nil {
		return nil, false, fmt.Errorf("pod member %s: the VM's container has not started: start it first", name)
	}
	select {
	case <-first.up:
	case <-time.After(startTimeout):
		return nil, false, fmt.Errorf("pod member %s: the VM's container is not running after %s", name, startTimeout)
	}
	pid, err := first.pid()
	if err != nil {
		return nil, false, fmt.Errorf("pod member %s: the pod's namespaces are gone with the VM's container: %w", name, err)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if m := a.members[name]; m != nil {
		return m.c, true, nil
	}
	if len(a.members) >= maxMembers {
		return nil, false, fmt.Errorf("pod member %s: the VM has %d members already: remove exited ones", name, maxMembers)
	}
	for other, m := range a.members {
		if m.slot == p.Slot {
			return nil, false, fmt.Errorf("pod member %s: slot disk %s holds member %s", name, p.Slot, other)
		}
	}
	disks, err := findDisks([]string{p.Slot}, a.diskOrder, slotWait)
	if err != nil {
		return nil, false, fmt.Errorf("pod member %s: %w", name, err)
	}
	dir := filepath.Join(podDir, name)
	b := bundleAt{name: name, dir: dir, pidFile: dir + "/pid", lower: dir + "/image",
		disk: filepath.Join(podDiskDir, name), files: bundleDir, join: pid}
	if err := mountSlot(disks[p.Slot], b.lower); err != nil {
		return nil, false, fmt.Errorf("pod member %s: %w", name, err)
	}
	// The pod's network and hostname are the VM's container's; a member
	// has no volumes of its own.
	mp := *p
	mp.Network, mp.Hostname, mp.Volumes = nil, "", nil
	if plan != nil {
		mp.Network, mp.Hostname = plan.Network, plan.Hostname
	}
	c := newContainer(name, b.dir, b.pidFile)
	err = writeBundle(&mp, b)
	if err == nil {
		err = a.runCrun(c, &mp)
	}
	if err != nil {
		unmountMember(b)
		return nil, false, fmt.Errorf("pod member %s: %w", name, err)
	}
	if a.members == nil {
		a.members = map[string]*member{}
	}
	a.members[name] = &member{c: c, slot: p.Slot}
	a.log.Info("pod member started", "member", name, "slot", p.Slot, "entrypoint", p.Entrypoint, "cmd", p.Cmd)
	return c, false, nil
}

// mountSlot mounts the image the host wrote into a slot disk. The guest
// may have read the device before the host wrote it (the kernel reads
// every disk's first sectors at boot, an earlier member read its own
// image): its cached blocks are dropped first.
func mountSlot(dev, at string) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("open slot disk: %w", err)
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("drop slot disk's cache: %w", err)
	}
	return mount(dev, at, "ext4", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOATIME, "")
}

// removeMember removes an exited member: crun's state, its root and
// image mounts, its directories.
func (a *Agent) removeMember(name string, conn net.Conn) error {
	a.mu.Lock()
	m := a.members[name]
	a.mu.Unlock()
	if m == nil {
		return fmt.Errorf("no pod member %q in this VM", name)
	}
	select {
	case <-m.c.done:
	default:
		return fmt.Errorf("pod member %s is running: stop it first", name)
	}
	if out, err := exec.Command("crun", "delete", "--force", name).CombinedOutput(); err != nil {
		if _, serr := os.Stat(filepath.Join(runtimeStateDir, name)); serr == nil {
			return fmt.Errorf("remove pod member %s: crun delete: %v: %s", name, err, out)
		}
	}
	dir := filepath.Join(podDir, name)
	if err := unmountMember(bundleAt{dir: dir, lower: dir + "/image", disk: filepath.Join(podDiskDir, name)}); err != nil {
		return fmt.Errorf("remove pod member %s: %w", name, err)
	}
	a.mu.Lock()
	delete(a.members, name)
	a.mu.Unlock()
	a.log.Info("pod member removed", "member", name)
	return channel.Reply(conn, nil)
}

// unmountMember undoes a member's mounts and directories.
func unmountMember(b bundleAt) error {
	var errs []error
	for _, m := range []string{filepath.Join(b.dir, "rootfs"), b.lower} {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, os.RemoveAll(b.dir), os.RemoveAll(b.disk))
	}
	return errors.Join(errs...)
}
