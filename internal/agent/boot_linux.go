package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mount points inside the guest's final root.
const (
	baseMount  = "/mnt/base"
	upperMount = "/mnt/upper"
	imageMount = "/mnt/image"
)

func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", target, err)
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", source, target, fstype, err)
	}
	return nil
}

// earlyMounts gives the initramfs what module loading and disk discovery
// need.
func earlyMounts() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
	} {
		if err := mount(m.src, m.dst, m.fs, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return err
		}
	}
	return nil
}

// findDisks maps disk serials to /dev nodes, waiting for the devices the
// caller needs to appear. order, when set (Firecracker's drives have no
// serial), names the disks in the order the guest enumerates them.
func findDisks(want, order []string, timeout time.Duration) (map[string]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		found := map[string]string{}
		for i, id := range order {
			dev := "/dev/vd" + string(rune('a'+i))
			if _, err := os.Stat(dev); err == nil {
				found[id] = dev
			}
		}
		entries, _ := os.ReadDir("/sys/block")
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), "vd") {
				continue
			}
			serial, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "serial"))
			if err != nil {
				continue
			}
			found[strings.TrimSpace(string(serial))] = "/dev/" + e.Name()
		}
		missing := ""
		for _, w := range want {
			if _, ok := found[w]; !ok {
				missing = w
			}
		}
		if missing == "" {
			return found, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("find disk %q: not among %v after %s", missing, found, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// switchRoot builds the overlay root from the base and upper disks and
// makes it /. The initramfs stays in memory underneath (it cannot be
// unmounted, and fc-agent runs from it).
func switchRoot(disks map[string]string) error {
	if err := mount(disks["base"], "/root.base", "ext4", unix.MS_RDONLY, ""); err != nil {
		return err
	}
	if err := mount(disks["upper"], "/root.upper", "ext4", unix.MS_NOATIME, ""); err != nil {
		return err
	}
	for _, d := range []string{"/root.upper/root", "/root.upper/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("prepare upper disk: %w", err)
		}
	}
	opts := "lowerdir=/root.base,upperdir=/root.upper/root,workdir=/root.upper/work"
	if err := mount("overlay", "/newroot", "overlay", 0, opts); err != nil {
		return err
	}
	for src, dst := range map[string]string{
		"/root.base":  "/newroot" + baseMount,
		"/root.upper": "/newroot" + upperMount,
		"/dev":        "/newroot/dev",
		"/proc":       "/newroot/proc",
		"/sys":        "/newroot/sys",
	} {
		if err := mount(src, dst, "", unix.MS_MOVE, ""); err != nil {
			return err
		}
	}
	if err := unix.Chdir("/newroot"); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	return unix.Chdir("/")
}

// rootMounts sets up what crun and containers expect in the final root.
func rootMounts() error {
	for _, m := range []struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	} {
		if err := mount(m.src, m.dst, m.fs, m.flags, m.data); err != nil {
			return err
		}
	}
	// /dev/ptmx must point at this devpts instance.
	os.Remove("/dev/ptmx")
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return fmt.Errorf("link /dev/ptmx: %w", err)
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		os.Symlink(l[0], l[1])
	}
	return nil
}

// cmdline reads fcvm.* parameters from the kernel command line.
func cmdline() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	params := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "fcvm.") {
			params[strings.TrimPrefix(k, "fcvm.")] = v
		}
	}
	return params
}

// powerOff syncs and ends the VM. Both VMMs run the guest so that a reboot
// ends the VMM process (QEMU -no-reboot, Firecracker reboot=k).
func powerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	// Reboot only returns on error; PID 1 must not exit.
	for {
		time.Sleep(time.Hour)
	}
}
