package artifacts

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// RootfsPackages are installed into the base rootfs on top of Debian
// minbase, by apt in the chroot, without their Recommends.
// fc-agent runs the container with crun on a bundle of its own; podman
// brings the seccomp profile the agent converts (containers-common's
// /usr/share/containers/seccomp.json) and is what BenchmarkGuestPodman
// measures; runc, catatonit (an --init) and fuse-overlayfs are there for
// podman.
var RootfsPackages = []string{
	"podman", "crun", "runc", "conmon", "fuse-overlayfs", "catatonit",
	"iproute2", "ca-certificates",
}

// GuestMountPoints are the empty directories fc-agent mounts on in the
// base rootfs.
var GuestMountPoints = []string{"mnt/upper", "mnt/image", "mnt/volumes", "run", "var/lib/containers"}

// guestFiles are the config files written into the base rootfs. They go
// into the rootfs digest.
var guestFiles = map[string]string{
	// No systemd in the guest: the agent mounts a pure cgroup2 hierarchy
	// and podman manages it directly; events go to a file, not journald.
	"etc/containers/containers.conf": `# Written by fcvm setup.
[containers]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
`,
	// Images arrive as disks; the guest never resolves short names.
	"etc/containers/registries.conf": "# Written by fcvm setup.\nunqualified-search-registries = []\n",
	"etc/hostname":                   "fcvm\n",
	"etc/hosts":                      "127.0.0.1\tlocalhost\n127.0.1.1\tfcvm\n::1\tlocalhost ip6-localhost ip6-loopback\n",
	// A regular file (never a symlink) so the agent can rewrite it.
	"etc/resolv.conf": "",
	"etc/fstab":       "# The guest's mounts are made by fc-agent.\n",
}

// rootfsDigest names the rootfs by everything that goes into it.
func (b *builder) rootfsDigest() string {
	h := sha256.New()
	for _, k := range sortedKeys(guestFiles) {
		fmt.Fprintf(h, "%s\n%d\n%s", k, len(guestFiles[k]), guestFiles[k])
	}
	return digest("rootfs", fmt.Sprint(RootfsRecipe), b.opts.Suite, b.opts.Mirror, b.arch,
		strings.Join(RootfsPackages, ","), strings.Join(GuestMountPoints, ","), fmt.Sprintf("%x", h.Sum(nil)))
}

func (b *builder) buildRootfs(ctx context.Context, d string) (string, error) {
	work := filepath.Join(b.tmp, "rootfs")
	tree := filepath.Join(b.tmp, "rootfs-tree")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	b.progress("rootfs: debootstrap --variant=minbase %s from %s (a few minutes)", b.opts.Suite, b.opts.Mirror)
	env := []string{"LC_ALL=C", "DEBIAN_FRONTEND=noninteractive", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	_, err := runTool(ctx, b.log, b.tmp, env,
		"debootstrap", "--variant=minbase", "--arch="+b.arch, "--components=main",
		b.opts.Suite, tree, b.opts.Mirror)
	if err != nil {
		return "", debootstrapError(err, tree, b.opts.Mirror)
	}
	b.step("debootstrap", start, 0)
	b.progress("rootfs: debootstrap took %s", time.Since(start).Round(time.Second))

	// debootstrap --include configures its packages in its own order,
	// and golang-github-containers-common fails that way; apt in the
	// chroot orders them properly.
	start = time.Now()
	b.progress("rootfs: installing %s", strings.Join(RootfsPackages, " "))
	if err := aptInstallChroot(ctx, b, tree, env); err != nil {
		return "", err
	}
	b.step("apt-get install", start, 0)
	b.progress("rootfs: packages took %s", time.Since(start).Round(time.Second))

	start = time.Now()
	if err := cleanRootfs(tree); err != nil {
		return "", fmt.Errorf("clean rootfs: %w", err)
	}
	if err := configureRootfs(tree); err != nil {
		return "", fmt.Errorf("configure rootfs: %w", err)
	}
	b.step("rootfs clean", start, 0)

	start = time.Now()
	img := filepath.Join(work, "rootfs.ext4")
	b.progress("rootfs: writing %s", "rootfs.ext4")
	size, err := mkfsExt4(ctx, b, tree, img, d)
	if err != nil {
		return "", err
	}
	b.step("mkfs.ext4", start, size)
	final := filepath.Join(b.dir, "rootfs-"+d)
	if err := writeJSONAtomic(filepath.Join(work, "rootfs.json"), map[string]any{
		"suite": b.opts.Suite, "mirror": b.opts.Mirror, "arch": b.arch, "packages": RootfsPackages,
		"built": time.Now().UTC().Format(time.RFC3339),
	}); err != nil {
		return "", err
	}
	if err := b.install(work, final); err != nil {
		return "", err
	}
	b.built("rootfs")
	b.progress("rootfs: %s, %s", final, humanSize(size))
	return filepath.Join(final, "rootfs.ext4"), nil
}

// debootstrapError adds the tail of debootstrap's own log, which says
// which package failed and why, to its error.
func debootstrapError(err error, tree, mirror string) error {
	var te *ToolError
	if errors.As(err, &te) {
		if log, rerr := os.ReadFile(filepath.Join(tree, "debootstrap", "debootstrap.log")); rerr == nil {
			te.Tail += "\n--- debootstrap.log:\n" + tail(string(log), tailLines)
		}
		if strings.Contains(te.Tail, "Failed getting release") || strings.Contains(te.Tail, "Couldn't download") {
			return fmt.Errorf("build rootfs from %s (is the mirror reachable? set --mirror): %w", mirror, err)
		}
	}
	return fmt.Errorf("build rootfs from %s: %w", mirror, err)
}

// aptInstallChroot installs RootfsPackages with the chroot's own apt,
// which debootstrap pointed at the mirror, without recommends and
// without starting services.
func aptInstallChroot(ctx context.Context, b *builder, tree string, env []string) error {
	policy := filepath.Join(tree, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		return err
	}
	defer os.Remove(policy)
	// Mirrors that are snapshots carry an expired Valid-Until.
	opts := []string{"-q", "-y", "-o", "Acquire::Check-Valid-Until=false", "-o", "Acquire::Languages=none"}
	if _, err := runTool(ctx, b.log, b.tmp, env, "chroot", append([]string{tree, "apt-get"}, append(opts, "update")...)...); err != nil {
		return fmt.Errorf("build rootfs: apt-get update in the chroot: %w", err)
	}
	args := append([]string{tree, "apt-get"}, opts...)
	args = append(args, "--no-install-recommends", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", "install")
	args = append(args, RootfsPackages...)
	if _, err := runTool(ctx, b.log, b.tmp, env, "chroot", args...); err != nil {
		return fmt.Errorf("build rootfs: apt-get install in the chroot: %w", err)
	}
	return nil
}

// cleanRootfs removes what a guest never reads: apt's indexes and
// package cache, documentation (keeping copyright files), manuals,
// locales and logs.
func cleanRootfs(root string) error {
	for _, glob := range []string{
		"var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old",
		"usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "usr/share/lintian/*",
		"var/log/*", "tmp/*", "var/tmp/*", "etc/machine-id", "var/lib/dbus/machine-id",
	} {
		matches, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	// Keep each package's copyright file; drop the rest of its docs.
	doc := filepath.Join(root, "usr/share/doc")
	return filepath.WalkDir(doc, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == doc || (d.IsDir() && filepath.Dir(p) == doc) {
			return nil
		}
		if d.Name() == "copyright" && filepath.Dir(filepath.Dir(p)) == doc {
			return nil
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
}

// configureRootfs writes guestFiles and makes GuestMountPoints.
func configureRootfs(root string) error {
	for _, name := range sortedKeys(guestFiles) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		// debootstrap copies the host's resolv.conf and hostname, and a
		// package may have made a symlink: replace whatever is there.
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(guestFiles[name]), 0o644); err != nil {
			return err
		}
	}
	for _, d := range GuestMountPoints {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	mtab := filepath.Join(root, "etc/mtab")
	if _, err := os.Lstat(mtab); os.IsNotExist(err) {
		return os.Symlink("../proc/self/mounts", mtab)
	}
	return nil
}

// mkfsExt4 writes tree into a new ext4 image at img, sized from the
// tree with room to spare (the file is sparse, and read-only in use).
// No journal: the base is never written by a guest.
func mkfsExt4(ctx context.Context, b *builder, tree, img, d string) (int64, error) {
	var bytes, inodes int64
	err := filepath.WalkDir(tree, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		inodes++
		if de.Type().IsRegular() {
			if info, err := de.Info(); err == nil {
				bytes += (info.Size() + 4095) &^ 4095
			}
		} else {
			bytes += 4096
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size rootfs: %w", err)
	}
	size := (bytes+bytes/5+64<<20)/(1<<20)*(1<<20) + 1<<20
	f, err := os.Create(img)
	if err != nil {
		return 0, err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	// A UUID derived from the digest keeps equal inputs' images alike.
	u := d + d
	uuid := fmt.Sprintf("%s-%s-4%s-8%s-%s", u[0:8], u[8:12], u[13:16], u[17:20], u[20:32])
	_, err = runTool(ctx, b.log, b.tmp, nil, "mkfs.ext4", "-q", "-F",
		"-L", "fcvm-rootfs", "-U", uuid, "-b", "4096", "-m", "0",
		"-N", fmt.Sprint(inodes+inodes/10+1024), "-O", "^has_journal",
		"-E", "root_owner=0:0,hash_seed="+uuid,
		"-d", tree, img)
	if err != nil {
		return 0, fmt.Errorf("build rootfs image: %w", err)
	}
	return size, nil
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
