// Package artifacts builds and finds the guest artifacts every VM boots
// from: a kernel, an initramfs holding fc-agent and the kernel modules
// the guest needs, and a read-only ext4 base root filesystem with podman.
//
// Build (what `fcvm setup` runs) makes them from Debian packages, with no
// network beyond the Debian mirror; Load (what `fcvm run` calls) finds the
// current set and fails with ErrNotSetUp when there is none.
//
// # Parts
//
//   - kernel: Debian's linux-image package for the host architecture (the
//     ABI package the linux-image-<arch> metapackage depends on), fetched
//     with apt-get download through a private apt configuration and
//     unpacked with dpkg-deb -x into a temp dir; it is never installed on
//     the host. Set.Kernel is the uncompressed ELF vmlinux taken out of the
//     bzImage: both drivers boot it (Firecracker needs it on x86_64; QEMU
//     boots it by PVH about twice as fast as the bzImage under TCG).
//     Set.BzImage keeps the original. BuildOptions.KernelPath replaces
//     Debian's kernel with the user's own vmlinux or bzImage; such a kernel
//     has no modules and must have what the guest needs built in.
//   - initramfs: an uncompressed newc cpio (it boots faster under TCG than
//     gzip) with fc-agent as /init (which CheckAgent requires to be a
//     static x86-64 executable: the initramfs has no dynamic loader, and
//     a plain `go build` with cgo available links fc-agent dynamically),
//     /dev/console, empty mount points
//     (initrdDirs), the modules in GuestModules plus their dependencies
//     under /lib/modules/<release>/ with their signatures stripped (see
//     stripModuleSignature), and a modules.dep naming only those. The
//     agent loads them with package guestmod.
//   - rootfs: debootstrap --variant=minbase, then RootfsPackages installed
//     by apt-get --no-install-recommends in the chroot, cleaned of caches
//     and docs, given the config files the guest needs, and written into
//     an ext4 image (no journal) with mkfs.ext4 -d: no mounting.
//
// Packages come from the Suite alone (not <suite>-updates or the
// security archive), so the kernel is the one of the last point release.
//
// # What the rootfs gives the guest agent
//
// /etc/containers/containers.conf selects crun, the cgroupfs manager and
// file events (no systemd in the guest); registries.conf has no search
// registries; /etc/hostname, /etc/hosts, and an empty regular-file
// /etc/resolv.conf the agent rewrites; empty mount points in
// GuestMountPoints. Tested in a TCG guest (BenchmarkGuestPodman), podman
// run --rootfs DIR:O works with --network none and host, crun and runc,
// and --init, provided the agent mounts cgroup2 on /sys/fs/cgroup, a
// tmpfs on /dev/shm (podman's lock manager fails without it), devpts,
// and puts /var/lib/containers on a filesystem that is not overlayfs.
// Nothing sets the kernel hostname: the agent should call sethostname,
// or containers see "(none)".
//
// # Content addressing
//
// Each part lives in a directory named by a digest of what went into it:
// kernel-<digest> (the kernel package's name, version and sha256, or the
// user's file's sha256), initrd-<digest> (the kernel digest, fc-agent's
// sha256 and the module list) and rootfs-<digest> (suite, mirror,
// architecture, package list and config files). current.json names the
// set in use. Each digest includes its part's recipe version
// (KernelRecipe, InitrdRecipe, RootfsRecipe), so a change to how a part
// is built rebuilds that part only. A Build whose inputs match
// current.json does nothing and needs no network: a newer Debian kernel
// is picked up by Force. When only fc-agent changed, only the initramfs
// is rebuilt. Old directories are left in place, because VMs and
// snapshots may still use them.
//
// # Failure and concurrency
//
// Build holds an exclusive flock on <data>/artifacts/.lock, builds every
// part in a temp dir under the artifacts dir and renames it into place,
// then rewrites current.json atomically: a failed or interrupted build
// leaves the previous set intact and nothing half-written. Temp dirs left
// by a crashed build are removed by the next. A failing host tool gives a
// *ToolError carrying the last lines of its output.
//
// Building the rootfs needs root (debootstrap, chroot); Build refuses
// early without it. The host needs apt, dpkg, debootstrap, e2fsprogs and
// debian-archive-keyring (`fcvm doctor` checks).
package artifacts

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fcvm/fcvm/internal/datadir"
)

// ErrNotSetUp means there are no guest artifacts, or some are missing.
var ErrNotSetUp = errors.New("guest artifacts missing: run `fcvm setup`")

// Recipe versions say how each part is built and go into its digest.
// Bump one when a change to this package changes what its part contains.
const (
	KernelRecipe = 2 // 2: module signatures stripped
	InitrdRecipe = 1
	RootfsRecipe = 1
)

// Set is one complete set of guest artifacts. Paths are absolute.
type Set struct {
	// Kernel is the uncompressed ELF vmlinux; both drivers boot it.
	Kernel string `json:"kernel"`
	// BzImage is the compressed kernel it came from, or "" when the user
	// supplied a vmlinux.
	BzImage string `json:"bzimage,omitempty"`
	// KernelVersion is the kernel's release, as `uname -r` prints it.
	KernelVersion string `json:"kernel_version"`
	// KernelPackage is the Debian package and version the kernel came
	// from, or "" for a user's kernel.
	KernelPackage string `json:"kernel_package,omitempty"`
	// Initrd is the initramfs: fc-agent as /init plus kernel modules.
	Initrd string `json:"initrd"`
	// Rootfs is the read-only ext4 base root filesystem.
	Rootfs string `json:"rootfs"`

	KernelDigest string `json:"kernel_digest"`
	InitrdDigest string `json:"initrd_digest"`
	RootfsDigest string `json:"rootfs_digest"`
	// Digest names the whole set: it changes when any part does.
	Digest string `json:"digest"`
}

// manifest is current.json: the set in use and the offline keys that
// decide whether a Build has anything to do.
type manifest struct {
	Set       Set    `json:"set"`
	KernelKey string `json:"kernel_key"`
	AgentSHA  string `json:"agent_sha256"`
}

const manifestName = "current.json"

func artifactsDir(dataDir string) string { return datadir.Dirs{Data: dataDir}.Artifacts() }

// Load returns the current set of guest artifacts under dataDir. The
// error wraps ErrNotSetUp when setup has not run or a file has gone.
func Load(dataDir string) (Set, error) {
	m, err := readManifest(artifactsDir(dataDir))
	if err != nil {
		return Set{}, err
	}
	if err := m.Set.check(); err != nil {
		return Set{}, err
	}
	return m.Set, nil
}

func readManifest(dir string) (manifest, error) {
	var m manifest
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if errors.Is(err, os.ErrNotExist) {
		return m, fmt.Errorf("load artifacts %s: %w", dir, ErrNotSetUp)
	}
	if err != nil {
		return m, fmt.Errorf("load artifacts: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("load artifacts %s: %w (run `fcvm setup --force`)", filepath.Join(dir, manifestName), err)
	}
	return m, nil
}

// check verifies that every file of the set exists.
func (s Set) check() error {
	for _, f := range []struct{ what, path string }{
		{"kernel", s.Kernel}, {"initramfs", s.Initrd}, {"rootfs", s.Rootfs},
	} {
		if f.path == "" {
			return fmt.Errorf("load artifacts: no %s: %w", f.what, ErrNotSetUp)
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("load artifacts: %s %s: %w", f.what, f.path, ErrNotSetUp)
		}
	}
	return nil
}
