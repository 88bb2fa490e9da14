package firecracker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/fcvm/fcvm/internal/vmm"
)

// The jailer chroots Firecracker into
// <chroot-base>/<exec-file name>/<id>/root, drops to uid/gid, applies
// cgroups and joins the netns, then execs Firecracker in the same process.
// Every path Firecracker is given is then relative to that root, so the
// kernel, initrd, disks and snapshot files are hard-linked into it first.

// jailID is the jailer --id: letters, digits and '-', at most 64.
func jailID(cfg vmm.Config) string {
	name := cfg.Name
	if name == "" {
		name = filepath.Base(cfg.RuntimeDir)
	}
	id := strings.Map(func(r rune) rune {
		if r == '-' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9') {
			return r
		}
		return '-'
	}, name)
	if len(id) > 64 {
		id = id[:64]
	}
	if id == "" {
		id = "vm"
	}
	return id
}

func chrootBase(cfg vmm.Config, j *JailerOptions) string {
	if j.ChrootBase != "" {
		return j.ChrootBase
	}
	return filepath.Join(cfg.RuntimeDir, "jail")
}

// jailRoot is where the jailer will chroot Firecracker for cfg.
func jailRoot(cfg vmm.Config, j *JailerOptions, bin string) (string, error) {
	root := filepath.Join(chrootBase(cfg, j), filepath.Base(bin), jailID(cfg), "root")
	if !filepath.IsAbs(root) {
		return "", fmt.Errorf("config Jailer.ChrootBase: %q is not absolute", root)
	}
	if len(filepath.Join(root, apiSocketName)) > 107 {
		return "", fmt.Errorf("config Jailer.ChrootBase: jail %q is too long for a Unix socket path (107 bytes): use a shorter chroot base", root)
	}
	return root, nil
}

// jailerArgs are the jailer's own arguments, before "--".
func jailerArgs(cfg vmm.Config, j *JailerOptions, bin, root string) []string {
	if abs, err := exec.LookPath(bin); err == nil {
		bin = abs
	}
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	args := []string{
		"--id", jailID(cfg),
		"--exec-file", bin,
		"--uid", strconv.Itoa(j.UID),
		"--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", chrootBase(cfg, j),
	}
	if cfg.NetNS != "" {
		args = append(args, "--netns", cfg.NetNS)
	}
	if j.CgroupVersion != 0 {
		args = append(args, "--cgroup-version", strconv.Itoa(j.CgroupVersion))
	}
	for _, c := range j.Cgroups {
		args = append(args, "--cgroup", c)
	}
	if j.ParentCgroup != "" {
		args = append(args, "--parent-cgroup", j.ParentCgroup)
	}
	return args
}

// linkIntoJail hard-links each file into the jail. Read-only files on
// another filesystem are copied; writable ones must be linked, since a
// copy would take the guest's writes away from the VM's disk. Writable
// files are given to the jailed user; read-only ones must be readable by
// it already (mode o+r).
func linkIntoJail(links []link, uid, gid int) error {
	for _, l := range links {
		if err := os.Remove(l.dst); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("link %s into jail: %w", l.src, err)
		}
		err := os.Link(l.src, l.dst)
		switch {
		case err == nil:
		case l.writable:
			if errors.Is(err, syscall.EXDEV) {
				return fmt.Errorf("link %s into jail: %w: put the jailer's chroot base on the same filesystem as the VM's disks", l.src, err)
			}
			return fmt.Errorf("link %s into jail: %w", l.src, err)
		default:
			if cerr := copyFile(l.src, l.dst, 0o644); cerr != nil {
				return fmt.Errorf("link %s into jail: %w (and copy: %w)", l.src, err, cerr)
			}
		}
		if l.writable {
			if err := os.Chown(l.dst, uid, gid); err != nil {
				return fmt.Errorf("give %s to the jail user: %w", l.src, err)
			}
		}
	}
	return nil
}

// removeJail removes <chroot-base>/<exec>/<id>. Only links and
// Firecracker's own files are in it; removing links leaves the VM's disks
// alone.
func removeJail(root string) error {
	if err := os.RemoveAll(filepath.Dir(root)); err != nil {
		return fmt.Errorf("remove jail: %w", err)
	}
	return nil
}
