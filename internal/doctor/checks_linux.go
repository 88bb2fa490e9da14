package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"

	"github.com/fcvm/fcvm/internal/kvm"
	"golang.org/x/sys/unix"
)

func checkKVM(context.Context, Options) Check {
	c := Check{Name: "kvm", NeededFor: "--vmm firecracker; fast --vmm qemu (without it QEMU emulates in software, TCG)"}
	st := kvm.Probe()
	c.OK, c.Detail, c.Fix = st.Usable, st.Detail, st.Fix
	if a := os.Getenv(kvm.AccelEnv); a != "" {
		c.Detail += fmt.Sprintf("; %s=%s", kvm.AccelEnv, a)
	}
	return c
}

func checkUserfaultfd(context.Context, Options) Check {
	c := Check{Name: "userfaultfd", NeededFor: "firecracker clones served by `fcvm snapshot serve`"}
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno == 0 {
		unix.Close(int(fd))
		c.OK, c.Detail = true, "userfaultfd(2) works"
		return c
	}
	// Since Linux 6.1 /dev/userfaultfd hands out descriptors to whoever
	// may open it, whatever vm.unprivileged_userfaultfd says.
	if f, err := os.OpenFile("/dev/userfaultfd", os.O_RDWR, 0); err == nil {
		f.Close()
		c.OK, c.Detail = true, "/dev/userfaultfd is usable"
		return c
	}
	sysctl, _ := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	c.Detail = fmt.Sprintf("userfaultfd(2): %v; vm.unprivileged_userfaultfd=%s; /dev/userfaultfd not usable", errno, strings.TrimSpace(string(sysctl)))
	c.Fix = "sudo sysctl -w vm.unprivileged_userfaultfd=1 (or run as root); file-backed clones work without it"
	return c
}

func checkReflink(_ context.Context, o Options) Check {
	c := Check{Name: "reflink", NeededFor: "instant copy-on-write VM and clone disks (without it: a sparse upper disk and overlayfs in the guest)"}
	dir := existingDir(o.DataDir)
	fix := fmt.Sprintf("put the data dir on btrfs or xfs, e.g.: truncate -s 50G /var/lib/fcvm.btrfs && mkfs.btrfs /var/lib/fcvm.btrfs && mkdir -p %s && mount -o loop /var/lib/fcvm.btrfs %s", o.DataDir, o.DataDir)
	src, err := os.CreateTemp(dir, ".fcvm-doctor-")
	if err != nil {
		c.Detail, c.Fix = fmt.Sprintf("cannot test %s: %v", dir, err), fix
		return c
	}
	defer os.Remove(src.Name())
	defer src.Close()
	dst, err := os.CreateTemp(dir, ".fcvm-doctor-")
	if err != nil {
		c.Detail, c.Fix = fmt.Sprintf("cannot test %s: %v", dir, err), fix
		return c
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		c.Detail, c.Fix = fmt.Sprintf("cannot test %s: %v", dir, err), fix
		return c
	}
	fs := fsType(dir)
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		c.Detail = fmt.Sprintf("%s (%s) has no reflinks: FICLONE: %v", dir, fs, err)
		c.Fix = fix
		return c
	}
	c.OK, c.Detail = true, fmt.Sprintf("%s (%s) supports reflinks", dir, fs)
	return c
}

// fsType names the filesystem dir is on, for messages.
func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown filesystem"
	}
	switch st.Type {
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem %#x", st.Type)
}

func checkNftables(context.Context, Options) Check {
	c := Check{Name: "nftables", NeededFor: "--network bridged (port publishing and masquerade)"}
	conn, err := nftables.New()
	if err == nil {
		_, err = conn.ListTables()
		conn.CloseLasting()
	}
	switch {
	case err == nil:
		c.OK, c.Detail = true, "kernel nf_tables answers over netlink"
	case errors.Is(err, unix.EPERM) || os.Geteuid() != 0:
		c.Detail = fmt.Sprintf("cannot ask nf_tables without root: %v", err)
		c.Fix = "run bridged VMs as root"
	default:
		c.Detail = fmt.Sprintf("nf_tables over netlink: %v", err)
		c.Fix = "sudo modprobe nf_tables (apt-get install nftables for the nft tool)"
	}
	return c
}

func checkFUSE(context.Context, Options) Check {
	c := Check{Name: "fuse", NeededFor: "volume tests and benchmarks on the host (guests bring their own)"}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	switch {
	case err == nil:
		f.Close()
		c.OK, c.Detail = true, "/dev/fuse is usable"
	case errors.Is(err, os.ErrNotExist):
		c.Detail, c.Fix = "/dev/fuse does not exist", "sudo modprobe fuse (apt-get install fuse3)"
	default:
		c.Detail, c.Fix = fmt.Sprintf("open /dev/fuse: %v", err), "apt-get install fuse3; check /dev/fuse permissions"
	}
	return c
}
