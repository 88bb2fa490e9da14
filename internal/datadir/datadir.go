// Package datadir says where fcvm keeps things on the host: persistent data
// (artifacts, images, VM records, disks, snapshots) under the data dir, and
// sockets under a short runtime dir (Unix socket paths are limited to 107
// bytes).
//
// The data dir is $FCVM_DATA_DIR, else /var/lib/fcvm for root and
// ~/.local/share/fcvm otherwise. The runtime dir is $FCVM_RUNTIME_DIR, else
// /run/fcvm for root and $XDG_RUNTIME_DIR/fcvm (or /tmp/fcvm-UID) otherwise.
package datadir

import (
	"fmt"
	"os"
	"path/filepath"
)

// Dirs is one resolved layout.
type Dirs struct {
	Data    string
	Runtime string
}

// Default resolves the layout from the environment.
func Default() (Dirs, error) {
	d := Dirs{Data: os.Getenv("FCVM_DATA_DIR"), Runtime: os.Getenv("FCVM_RUNTIME_DIR")}
	root := os.Geteuid() == 0
	if d.Data == "" {
		if root {
			d.Data = "/var/lib/fcvm"
		} else {
			home, err := os.UserHomeDir()
			if err != nil {
				return Dirs{}, fmt.Errorf("find data dir: %w (set FCVM_DATA_DIR)", err)
			}
			d.Data = filepath.Join(home, ".local", "share", "fcvm")
		}
	}
	if d.Runtime == "" {
		switch {
		case root:
			d.Runtime = "/run/fcvm"
		case os.Getenv("XDG_RUNTIME_DIR") != "":
			d.Runtime = filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "fcvm")
		default:
			d.Runtime = fmt.Sprintf("/tmp/fcvm-%d", os.Getuid())
		}
	}
	return d, nil
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
