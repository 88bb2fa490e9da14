// Command rootfscheck is a test /init that checks a base rootfs the way
// fc-agent will use it: load modules, mount the rootfs disk read-only
// under an overlay with a tmpfs upper, mount cgroup2, then run podman
// with the rootfs's containers.conf: `podman run --rootfs DIR:O` with
// --network none and host. It prints RFCHECK lines and powers off.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/guestmod"
)

func say(format string, args ...any) { fmt.Printf("RFCHECK "+format+"\n", args...) }

func must(what string, err error) {
	if err != nil {
		say("FAIL %s: %v", what, err)
		poweroff()
	}
}

func poweroff() {
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func mount(src, dst, fstype string, flags uintptr, data string) {
	os.MkdirAll(dst, 0o755)
	must("mount "+dst, syscall.Mount(src, dst, fstype, flags, data))
}

func main() {
	start := time.Now()
	mount("proc", "/proc", "proc", 0, "")
	mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	must("load modules", guestmod.LoadAll(log))

	mount("/dev/vda", "/mnt/base", "ext4", syscall.MS_RDONLY, "")
	mount("tmpfs", "/mnt/rw", "tmpfs", 0, "size=256m")
	os.MkdirAll("/mnt/rw/upper", 0o755)
	os.MkdirAll("/mnt/rw/work", 0o755)
	mount("overlay", "/newroot", "overlay", 0, "lowerdir=/mnt/base,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work")
	mount("/dev", "/newroot/dev", "", syscall.MS_BIND|syscall.MS_REC, "")
	// podman's lock manager needs /dev/shm, which devtmpfs lacks.
	mount("tmpfs", "/newroot/dev/shm", "tmpfs", 0, "mode=1777")
	mount("devpts", "/newroot/dev/pts", "devpts", 0, "newinstance,ptmxmode=0666")
	mount("proc", "/newroot/proc", "proc", 0, "")
	mount("sysfs", "/newroot/sys", "sysfs", 0, "")
	mount("cgroup2", "/newroot/sys/fs/cgroup", "cgroup2", 0, "")
	mount("tmpfs", "/newroot/run", "tmpfs", 0, "")
	mount("tmpfs", "/newroot/tmp", "tmpfs", 0, "")
	// Container storage on an overlayfs root would need fuse-overlayfs;
	// the agent puts it on a real filesystem, here a tmpfs.
	mount("tmpfs", "/newroot/var/lib/containers", "tmpfs", 0, "")
	// The container's root: the base image itself, read-only.
	mount("/dev/vda", "/newroot/mnt/image", "ext4", syscall.MS_RDONLY, "")
	must("chroot", syscall.Chroot("/newroot"))
	must("chdir", os.Chdir("/"))
	say("ready after %s", time.Since(start).Round(time.Millisecond))

	os.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
	run := func(name string, args ...string) {
		t := time.Now()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		res := strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", " | ")
		if len(res) > 300 {
			res = res[len(res)-300:]
		}
		say("%s err=%v took=%s out=%s", name, err, time.Since(t).Round(time.Millisecond), res)
	}
	run("version", "podman", "--version")
	run("info", "podman", "info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Host.CgroupsVersion}} {{.Host.EventLogger}} {{.Store.GraphDriverName}}")
	run("run-none", "podman", "run", "--rm", "--network", "none", "--rootfs", "/mnt/image:O", "sh", "-c", "echo hello-none; exit 3")
	run("run-host", "podman", "run", "--rm", "--network", "host", "--rootfs", "/mnt/image:O", "cat", "/etc/hostname")
	run("run-runc", "podman", "--runtime", "runc", "run", "--rm", "--network", "none", "--rootfs", "/mnt/image:O", "echo", "hello-runc")
	run("run-init", "podman", "run", "--rm", "--init", "--network", "none", "--rootfs", "/mnt/image:O", "echo", "hello-init")
	say("done after %s", time.Since(start).Round(time.Millisecond))
	poweroff()
}
