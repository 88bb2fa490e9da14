// Package datadir says where fcvm keeps things on the host: persistent data
// (artifacts, images, VM records, disks, snapshots) under the data dir, and
// sockets under a short runtime dir (Unix socket paths are limited to 107
// bytes).
//
// The data dir is $FCVM_DATA_DIR, else /var/lib/fcvm for root and
// ~/.local/share/fcvm otherwise. The runtime dir is $FCVM_RUNTIME_DIR, else
// /run/fcvm for root and $XDG_RUNTIME_DIR/fcvm (or /tmp/fcvm-UID) otherwise.
//
// # The /tmp fallback
//
// /tmp is shared with every local user, any of whom could make
// /tmp/fcvm-UID first (a directory of theirs, or a symlink to one) and
// then swap in VM directories, sockets and serve records of their own.
// So [Default] makes that directory itself, 0700, and refuses one that is
// a symlink, not a directory, not owned by the user or open to others.
// /tmp's sticky bit then keeps others from renaming or removing it.
package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Dirs is one resolved layout.
type Dirs struct {
	Data    string
	Runtime string
}

// Default resolves the layout from the environment.
func Default() (Dirs, error) {
	return resolve(host{getenv: os.Getenv, euid: os.Geteuid(), uid: os.Getuid(), tmp: "/tmp"})
}

// host is what the layout depends on, so that tests can play another
// user.
type host struct {
	getenv    func(string) string
	euid, uid int
	tmp       string // where the runtime dir falls back to
}

func resolve(h host) (Dirs, error) {
	d := Dirs{Data: h.getenv("FCVM_DATA_DIR"), Runtime: h.getenv("FCVM_RUNTIME_DIR")}
	root := h.euid == 0
	if d.Data == "" {
		switch home := h.getenv("HOME"); {
		case root:
			d.Data = "/var/lib/fcvm"
		case home == "":
			return Dirs{}, errors.New("find data dir: $HOME is not set: set it or FCVM_DATA_DIR")
		default:
			d.Data = filepath.Join(home, ".local", "share", "fcvm")
		}
	}
	if d.Runtime == "" {
		switch xdg := h.getenv("XDG_RUNTIME_DIR"); {
		case root:
			d.Runtime = "/run/fcvm"
		case xdg != "":
			d.Runtime = filepath.Join(xdg, "fcvm")
		default:
			d.Runtime = filepath.Join(h.tmp, fmt.Sprintf("fcvm-%d", h.uid))
			if err := privateDir(d.Runtime, h.uid); err != nil {
				return Dirs{}, err
			}
		}
	}
	return d, nil
}

// privateDir makes path a directory of uid's, mode 0700, unless it is
// one already, and refuses whatever else is there. Mkdir, unlike
// MkdirAll, does not follow a symlink planted at path, and Lstat sees the
// symlink itself.
func privateDir(path string, uid int) error {
	fix := "remove it (its owner or root can), or set XDG_RUNTIME_DIR or FCVM_RUNTIME_DIR to a directory only you can write"
	err := os.Mkdir(path, 0o700)
	made := err == nil
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create runtime dir %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("check runtime dir %s: %w", path, err)
	}
	switch st := fi.Sys().(*syscall.Stat_t); {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("runtime dir %s is a symlink, which anyone could have made: %s", path, fix)
	case !fi.IsDir():
		return fmt.Errorf("runtime dir %s is not a directory: %s", path, fix)
	case int(st.Uid) != uid:
		return fmt.Errorf("runtime dir %s belongs to uid %d, not to you (uid %d): %s", path, st.Uid, uid, fix)
	case made && fi.Mode().Perm() != 0o700:
		// Only a umask that takes the owner's own bits away gets here.
		if err := os.Chmod(path, 0o700); err != nil {
			return fmt.Errorf("create runtime dir %s: %w", path, err)
		}
	case fi.Mode().Perm() != 0o700:
		return fmt.Errorf("runtime dir %s has mode %#o, not 0700, so others may have put things in it: %s", path, fi.Mode().Perm(), fix)
	}
	return nil
}

// Artifacts holds the guest kernel, initramfs and base rootfs.
func (d Dirs) Artifacts() string { return filepath.Join(d.Data, "artifacts") }

// Images holds pulled images, one directory per manifest digest.
func (d Dirs) Images() string { return filepath.Join(d.Data, "images") }

// VMs holds one directory per VM: its record, disks and logs.
func (d Dirs) VMs() string { return filepath.Join(d.Data, "vms") }

// Snapshots holds one directory per snapshot tag.
func (d Dirs) Snapshots() string { return filepath.Join(d.Data, "snapshots") }

// VMRuntime holds one VM's sockets.
func (d Dirs) VMRuntime(id string) string { return filepath.Join(d.Runtime, id) }
