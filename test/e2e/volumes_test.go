package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fcvm/fcvm/internal/imagetest"
)

// fcvmAt runs fcvm with dir as its working directory (for relative -v
// paths).
func fcvmAt(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := fcvmCmd(t.Context(), dataDir, args...)
	cmd.Dir = dir
	return runCmd(t, cmd, args)
}

// TestVolumeReadWrite shares a directory both ways: the container reads
// what the host wrote (a small file and a 3 MiB one) and writes files and
// a directory that the host then reads, owned by the user fcvm runs as.
func TestVolumeReadWrite(t *testing.T) {
	needSetup(t)
	t.Parallel()
	ref := busyboxArchive(t, imagetest.Options{})
	parent := t.TempDir()
	share := filepath.Join(parent, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "from-host"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 3<<20+123)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(share, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(blob)

	name := uniqueName(t, "rw")
	script := strings.Join([]string{
		"cat /data/from-host",
		"sha256sum /data/blob | cut -d' ' -f1",
		"cp /data/blob /data/blob-copy",
		"echo written in the guest > /data/from-guest",
		"mkdir /data/dir && echo nested > /data/dir/file",
		"ls /data | tr '\\n' ' '",
	}, " && ")
	// A relative host path resolves against fcvm's working directory.
	r := fcvmAt(t, parent, "run", "--name", name, "-v", "./share:/data", ref, "sh", "-c", script)
	t.Cleanup(func() { fcvm(t, "rm", "-f", name) })
	want := fmt.Sprintf("hello from the host\n%x\nblob blob-copy dir from-guest from-host ", sum)
	if r.code != 0 || r.stdout != want {
		t.Fatalf("container output:\n%s\nwant stdout %q", r, want)
	}

	for file, content := range map[string]string{
		"from-guest": "written in the guest\n",
		"dir/file":   "nested\n",
	} {
		b, err := os.ReadFile(filepath.Join(share, file))
		if err != nil || string(b) != content {
			t.Errorf("host reads %s: %q, %v; want %q", file, b, err, content)
		}
	}
	if b, err := os.ReadFile(filepath.Join(share, "blob-copy")); err != nil || !bytes.Equal(b, blob) {
		t.Errorf("host reads blob-copy: %d bytes, %v; want the %d bytes of blob", len(b), err, len(blob))
	}
	// The host side touches files as the user running fcvm.
	for _, file := range []string{"from-guest", "dir", "dir/file", "blob-copy"} {
		st, err := os.Stat(filepath.Join(share, file))
		if err != nil {
			t.Errorf("stat %s: %v", file, err)
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		if int(sys.Uid) != os.Getuid() || int(sys.Gid) != os.Getgid() {
			t.Errorf("%s owned by %d:%d, want %d:%d (the user running fcvm)", file, sys.Uid, sys.Gid, os.Getuid(), os.Getgid())
		}
	}

	// The record names the volume with its absolute host path, and so
	// do podman's Mounts.
	ins := fcvm(t, "inspect", name)
	var recs []struct {
		Mounts []struct {
			Source, Destination string
			RW                  bool
		}
		Fcvm struct {
			Volumes []struct {
				Host     string `json:"host"`
				Guest    string `json:"guest"`
				ReadOnly bool   `json:"read_only"`
			} `json:"volumes"`
		}
	}
	if err := json.Unmarshal([]byte(ins.stdout), &recs); ins.code != 0 || err != nil || len(recs) != 1 {
		t.Fatalf("inspect: %s (%v)", ins, err)
	}
	if v := recs[0].Fcvm.Volumes; len(v) != 1 || v[0].Host != share || v[0].Guest != "/data" || v[0].ReadOnly {
		t.Errorf("inspect volumes: %+v; want one volume %s:/data", v, share)
	}
	if m := recs[0].Mounts; len(m) != 1 || m[0].Source != share || m[0].Destination != "/data" || !m[0].RW {
		t.Errorf("inspect Mounts: %+v; want one bind mount %s:/data", m, share)
	}
}

// TestVolumeReadOnly runs two volumes at once: the read-only one can be
// read but refuses writes (the container sees a read-only file system
// and fails) and nothing reaches its host directory, while the writable
// one works.
func TestVolumeReadOnly(t *testing.T) {
	needSetup(t)
	t.Parallel()
	ref := busyboxArchive(t, imagetest.Options{})
	ro := t.TempDir()
	rw := t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "in"), []byte("read me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "cat /ro/in && echo ok > /rw/out && echo bad > /ro/in"
	r := fcvm(t, "run", "--rm", "-v", ro+":/ro:ro,z", "-v", rw+":/rw", ref, "sh", "-c", script)
	if r.code == 0 {
		t.Fatalf("writing to a read-only volume succeeded:\n%s", r)
	}
	if r.stdout != "read me\n" {
		t.Errorf("stdout %q, want the read-only volume's file", r.stdout)
	}
	if !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("stderr %q: want the container to see EROFS", r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "ok\n" {
		t.Errorf("writable volume beside a read-only one: %q, %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(ro, "in")); string(b) != "read me\n" {
		t.Errorf("read-only volume's file changed on the host: %q", b)
	}

	// Creating, removing and renaming are refused too.
	script = "touch /ro/new; mkdir /ro/d; rm /ro/in; mv /ro/in /ro/moved; ls /ro"
	r = fcvm(t, "run", "--rm", "-v", ro+":/ro:ro", ref, "sh", "-c", script)
	if r.code != 0 || r.stdout != "in\n" || strings.Count(r.stderr, "Read-only file system") < 4 {
		t.Errorf("changes through a read-only volume:\n%s\nwant four EROFS and in left alone", r)
	}
	entries, _ := os.ReadDir(ro)
	if len(entries) != 1 || entries[0].Name() != "in" {
		t.Errorf("read-only host directory now holds %v, want only in", entries)
	}
}

// TestVolumeBadInput checks that bad -v flags fail before any VM starts,
// with an error naming the problem, and leave no record.
func TestVolumeBadInput(t *testing.T) {
	archive := busyboxArchive(t, imagetest.Options{})
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, volume, want string
		more               []string
	}{
		{"missing host dir", dir + "/nosuch:/data", dir + "/nosuch does not exist", nil},
		{"host path is a file", file + ":/data", file + " is not a directory", nil},
		{"relative guest path", dir + ":data", "not absolute", nil},
		{"duplicate guest path", dir + ":/data", "/data is already a volume", []string{"-v", dir + ":/data/"}},
		{"unknown option", dir + ":/data:rx", `option "rx" is not supported`, nil},
		{"named volume", "cache:/data", "named volumes are not supported", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := uniqueName(t, "bad")
			args := append([]string{"run", "--rm", "--name", name, "-v", tc.volume}, tc.more...)
			badRun(t, tc.want, append(args, archive, "true")...)
			assertNothingLeft(t, name, "")
		})
	}
}
