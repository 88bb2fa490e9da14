package datadir

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPrivateDir: the runtime dir fallback is made 0700, kept when it is
// already the user's own 0700 directory, and refused, with what to do,
// when another user could have made or reached it.
func TestPrivateDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root, to make directories owned by another user")
	}
	const other = 65534
	uid := os.Getuid()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string // in the error; "" for none
	}{
		{"missing", func(*testing.T, string) {}, ""},
		{"ours, 0700", func(t *testing.T, p string) { mkdir(t, p, 0o700, uid) }, ""},
		{"another user's", func(t *testing.T, p string) { mkdir(t, p, 0o700, other) }, "belongs to uid 65534"},
		{"ours, 0755", func(t *testing.T, p string) { mkdir(t, p, 0o755, uid) }, "has mode 0755"},
		{"ours, 0777", func(t *testing.T, p string) { mkdir(t, p, 0o777, uid) }, "has mode 0777"},
		{"a symlink to ours", func(t *testing.T, p string) {
			target := p + ".target"
			mkdir(t, target, 0o700, uid)
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}, "is a symlink"},
		{"a symlink to nothing", func(t *testing.T, p string) {
			if err := os.Symlink(p+".elsewhere", p); err != nil {
				t.Fatal(err)
			}
		}, "is a symlink"},
		{"a file", func(t *testing.T, p string) {
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fcvm-0")
			tc.setup(t, path)
			err := privateDir(path, uid)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "FCVM_RUNTIME_DIR") {
					t.Fatalf("privateDir = %v, want an error saying %q and what to do", err, tc.want)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				if _, err := os.Lstat(path + ".elsewhere"); err == nil {
					t.Error("a directory was made through the symlink")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.IsDir() || fi.Mode().Perm() != 0o700 || int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
				t.Errorf("runtime dir %v owned by %d, want a 0700 directory of uid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, uid)
			}
		})
	}
}

// TestPrivateDirUmask: a directory it makes is 0700 even under a umask
// that takes the owner's bits.
func TestPrivateDirUmask(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fcvm-0")
	old := syscall.Umask(0o277)
	err := privateDir(path, os.Getuid())
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("made %v, %v; want 0700", fi.Mode(), err)
	}
}

// mkdir makes path with exactly mode perm, owned by uid.
func mkdir(t *testing.T, path string, perm os.FileMode, uid int) {
	t.Helper()
	if err := os.Mkdir(path, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// TestResolveTmpFallback: a user without XDG_RUNTIME_DIR gets
// TMP/fcvm-UID only if it is their own private directory.
func TestResolveTmpFallback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root, to make directories owned by another user")
	}
	const uid = 65534
	env := map[string]string{"HOME": "/home/u"}
	h := host{getenv: func(k string) string { return env[k] }, euid: uid, uid: uid, tmp: t.TempDir()}
	fallback := filepath.Join(h.tmp, "fcvm-65534")

	mkdir(t, fallback, 0o700, 0)
	if d, err := resolve(h); err == nil || !strings.Contains(err.Error(), "belongs to uid 0") {
		t.Errorf("resolve with %s made by root = %+v, %v; want refused", fallback, d, err)
	}
	if err := os.Chown(fallback, uid, uid); err != nil {
		t.Fatal(err)
	}
	d, err := resolve(h)
	if err != nil || d != (Dirs{Data: "/home/u/.local/share/fcvm", Runtime: fallback}) {
		t.Errorf("resolve = %+v, %v; want the user's own %s", d, err, fallback)
	}

	// XDG_RUNTIME_DIR and FCVM_RUNTIME_DIR are the user's to choose.
	env["XDG_RUNTIME_DIR"] = "/run/user/65534"
	if d, err := resolve(h); err != nil || d.Runtime != "/run/user/65534/fcvm" {
		t.Errorf("resolve with XDG_RUNTIME_DIR = %+v, %v", d, err)
	}
	env["FCVM_RUNTIME_DIR"] = "/somewhere"
	if d, err := resolve(h); err != nil || d.Runtime != "/somewhere" {
		t.Errorf("resolve with FCVM_RUNTIME_DIR = %+v, %v", d, err)
	}
}
