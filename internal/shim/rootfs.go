package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/mount"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/image"
)

// rootfsImage turns the snapshot mounts containerd hands over into an
// fcvm image disk. The mounts are mounted at target (the bundle's rootfs
// directory) only while the disk is built and the command checked, so a
// running container holds no host mount.
//
// The disk is cached by the snapshots' identity (rootfsKey): every
// container of an image shares one disk, as `fcvm run` containers of one
// image do; the guest's own upper disk takes its writes.
func (s *service) rootfsImage(ctx context.Context, mounts []*types.Mount, target string, p *specs.Process) (*image.Image, error) {
	if len(mounts) == 0 {
		return nil, errors.New("no rootfs mounts: fcvm builds the guest's disk from containerd's snapshot mounts (a bundle with a ready rootfs is not supported)")
	}
	key, err := rootfsKey(mounts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(target, 0o711); err != nil {
		return nil, fmt.Errorf("make rootfs dir: %w", err)
	}
	ms := make([]mount.Mount, len(mounts))
	for i, m := range mounts {
		ms[i] = mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options}
	}
	if err := mount.All(ms, target); err != nil {
		return nil, fmt.Errorf("mount rootfs: %w", err)
	}
	img, err := func() (*image.Image, error) {
		if err := findCommand(target, p); err != nil {
			return nil, err
		}
		return s.eng.ImageFromTree(ctx, key, target)
	}()
	if uerr := mount.UnmountAll(target, 0); uerr != nil && err == nil {
		err = fmt.Errorf("unmount rootfs: %w", uerr)
	}
	return img, err
}

// rootfsKey names the content of a rootfs: the layer directories (overlay
// lowerdirs, or a bind mount's source) by path, device, inode and change
// time, so that a snapshot removed and another made at the same path is a
// different key. Committed snapshots do not change; a writable layer that
// already holds changes would not be in the key, so it is refused.
func rootfsKey(mounts []*types.Mount) (string, error) {
	var parts []string
	for _, m := range mounts {
		var dirs []string
		switch m.Type {
		case "overlay":
			for _, o := range m.Options {
				k, v, _ := strings.Cut(o, "=")
				switch k {
				case "lowerdir":
					dirs = append(dirs, strings.Split(v, ":")...)
				case "upperdir":
					empty, err := emptyDir(v)
					if err != nil {
						return "", fmt.Errorf("read rootfs upper dir: %w", err)
					}
					if !empty {
						return "", fmt.Errorf("rootfs upper dir %s holds changes: fcvm boots the image layers only, start from a fresh snapshot", v)
					}
				}
			}
		case "bind", "rbind":
			dirs = []string{m.Source}
		default:
			return "", fmt.Errorf("rootfs mount type %q: fcvm supports the overlayfs and native snapshotters (overlay and bind mounts)", m.Type)
		}
		for _, d := range dirs {
			var st unix.Stat_t
			if err := unix.Stat(d, &st); err != nil {
				return "", fmt.Errorf("rootfs layer %s: %w", d, err)
			}
			parts = append(parts, fmt.Sprintf("%s:%d:%d:%d.%d", d, st.Dev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec))
		}
	}
	return strings.Join(parts, "\n"), nil
}

func emptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return false, err
}

// defaultPath is the PATH runc and podman search when the process sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// findCommand checks that the process's command exists in the rootfs at
// root and is executable, as runc's create does, so a wrong entrypoint is
// a clear error of Create rather than a VM booted for nothing. Paths are
// resolved inside root (symlinks included), never on the host.
func findCommand(root string, p *specs.Process) error {
	arg0 := p.Args[0]
	if strings.Contains(arg0, "/") {
		if !path.IsAbs(arg0) {
			arg0 = path.Join("/", p.Cwd, arg0)
		}
		if err := executableIn(root, arg0); err != nil {
			return fmt.Errorf("exec: %q: %w", p.Args[0], err)
		}
		return nil
	}
	search := defaultPath
	for _, kv := range p.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			search = v
		}
	}
	for _, dir := range strings.Split(search, ":") {
		if dir != "" && executableIn(root, path.Join("/", dir, arg0)) == nil {
			return nil
		}
	}
	return fmt.Errorf("exec: %q: executable file not found in $PATH (%s) of the image: check the image's entrypoint and the command", arg0, search)
}

// executableIn reports whether name, resolved with root as "/", is an
// executable regular file.
func executableIn(root, name string) error {
	dir, err := os.Open(root)
	if err != nil {
		return err
	}
	defer dir.Close()
	fd, err := unix.Openat2(int(dir.Fd()), name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return errors.New("no such file or directory in the image")
		}
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}
