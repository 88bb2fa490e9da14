package fusepipe

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The conformance run: guest users other than root doing to each other's
// files what POSIX lets them and refuses them. Each step runs in a helper
// process with that user's credentials. The same script runs in tiers
// with the same assertions: a plain local directory (the reference) and a
// fuse-pipe mount.

// users the script acts as; each is in its own group only.
var confUsers = map[string]*syscall.Credential{
	"root":  nil,
	"alice": {Uid: 1000, Gid: 1000, Groups: []uint32{1000}},
	"bob":   {Uid: 1001, Gid: 1001, Groups: []uint32{1001}},
}

// confScript is "user op args... = want" per line; $/ is the directory
// under test. stat prints uid:gid:octal mode.
const confScript = `
root mkdir $/tmp 0777 = ok
root chmod $/tmp 01777 = ok
alice create $/tmp/a 0644 = ok
alice stat $/tmp/a = 1000:1000:100644
root stat $/tmp/a = 1000:1000:100644

# chmod: the owner may, others may not
alice chmod $/tmp/a 0600 = ok
bob chmod $/tmp/a 0644 = EPERM
alice stat $/tmp/a = 1000:1000:100600

# open: permission bits against the reported owner
bob open-r $/tmp/a = EACCES
bob open-w $/tmp/a = EACCES
alice open-r $/tmp/a = ok
alice open-w $/tmp/a = ok
alice write $/tmp/a = ok
bob write $/tmp/a = EACCES

# chown: only root gives files away; the owner may pick a group it is in
alice chown $/tmp/a 1001 -1 = EPERM
alice chown $/tmp/a -1 1001 = EPERM
alice chown $/tmp/a 1000 1000 = ok
bob chown $/tmp/a -1 1001 = EPERM
root chown $/tmp/a 1001 1001 = ok
alice open-r $/tmp/a = EACCES
bob open-r $/tmp/a = ok
bob chmod $/tmp/a 0640 = ok
root chown $/tmp/a 1000 1000 = ok
alice stat $/tmp/a = 1000:1000:100640

# sticky directory: only the owner removes or renames
bob unlink $/tmp/a = EPERM
bob rename $/tmp/a $/tmp/b = EPERM
bob create $/tmp/bobs 0666 = ok
bob stat $/tmp/bobs = 1001:1001:100644
bob chmod $/tmp/bobs 0666 = ok
alice unlink $/tmp/bobs = EPERM
alice rename $/tmp/bobs $/tmp/x = EPERM
alice rename $/tmp/a $/tmp/a2 = ok
alice rename $/tmp/a2 $/tmp/a = ok
alice symlink $/tmp/sl a = ok
alice stat $/tmp/sl = 1000:1000:120777
bob unlink $/tmp/sl = EPERM
alice unlink $/tmp/sl = ok
root create $/tmp/roots 0644 = ok
root unlink $/tmp/roots = ok

# utimensat: explicit times for the owner, "now" for anyone who may write
alice utime-set $/tmp/a = ok
bob utime-set $/tmp/a = EPERM
bob utime-now $/tmp/a = EACCES
bob utime-now $/tmp/bobs = ok
alice utime-now $/tmp/bobs = ok
alice utime-set $/tmp/bobs = EPERM
root utime-set $/tmp/a = ok

# truncate and ftruncate
bob truncate $/tmp/a 0 = EACCES
alice truncate $/tmp/a 1 = ok
alice truncate $/tmp/bobs 0 = ok
alice ftruncate-ro $/tmp/a = EINVAL
alice ftruncate-w $/tmp/a = ok

# directories of other users
root mkdir $/rootdir 0755 = ok
alice mkdir $/rootdir/x 0755 = EACCES
alice create $/rootdir/x 0644 = EACCES
alice rename $/tmp/a $/rootdir/a = EACCES
alice mkdir $/tmp/ad 0700 = ok
alice stat $/tmp/ad = 1000:1000:40700
bob create $/tmp/ad/x 0644 = EACCES
bob stat $/tmp/ad/x = EACCES
alice create $/tmp/ad/x 0644 = ok
alice stat $/tmp/ad/x = 1000:1000:100644
bob rmdir $/tmp/ad = EPERM
alice unlink $/tmp/ad/x = ok
alice rmdir $/tmp/ad = ok

# set-group-ID directories hand down their group, and to directories
# their set-group-ID bit
root mkdir $/sg 0777 = ok
root chown $/sg 0 2000 = ok
root chmod $/sg 02777 = ok
alice create $/sg/f 0644 = ok
alice stat $/sg/f = 1000:2000:100644
alice mkdir $/sg/d 0755 = ok
alice stat $/sg/d = 1000:2000:42755
alice create $/sg/d/f 0600 = ok
alice stat $/sg/d/f = 1000:2000:100600
alice mkfifo $/sg/p 0640 = ok
alice stat $/sg/p = 1000:2000:10640

# set-ID bits: cleared by a write of an unprivileged user and by chown
alice create $/tmp/s 0755 = ok
alice chmod $/tmp/s 04755 = ok
alice stat $/tmp/s = 1000:1000:104755
bob write $/tmp/s = EACCES
alice write $/tmp/s = ok
alice stat $/tmp/s = 1000:1000:100755
alice chmod $/tmp/s 06755 = ok
alice write $/tmp/s = ok
alice stat $/tmp/s = 1000:1000:100755
alice chmod $/tmp/s 02745 = ok
alice write $/tmp/s = ok
alice stat $/tmp/s = 1000:1000:102745
alice truncate $/tmp/s 0 = ok
alice stat $/tmp/s = 1000:1000:102745
alice chmod $/tmp/s 04755 = ok
alice truncate $/tmp/s 0 = ok
alice stat $/tmp/s = 1000:1000:100755
alice chmod $/tmp/s 04755 = ok
root chown $/tmp/s 1000 1000 = ok
alice stat $/tmp/s = 1000:1000:100755
root chmod $/tmp/s 04755 = ok
root write $/tmp/s = ok
root stat $/tmp/s = 1000:1000:104755
root chown $/tmp/s -1 2000 = ok
alice chmod $/tmp/s 02755 = ok
alice stat $/tmp/s = 1000:2000:100755

# device nodes (on the mount: plain files on the host)
root mknod-c $/tmp/null 0666 1 3 = ok
root stat $/tmp/null = 0:0:20644
alice mknod-c $/tmp/null2 0666 1 3 = EPERM
alice chmod $/tmp/null 0600 = EPERM
root chown $/tmp/null 1000 1000 = ok
alice chmod $/tmp/null 0600 = ok
alice stat $/tmp/null = 1000:1000:20600
bob unlink $/tmp/null = EPERM
alice unlink $/tmp/null = ok

# hard links to other users' files (fs.protected_hardlinks)
bob link $/tmp/a $/tmp/bl = EPERM
alice link $/tmp/a $/tmp/al = ok
alice stat $/tmp/al = 1000:1000:100640
alice unlink $/tmp/al = ok
root unlink $/tmp/a = ok
`

type confStep struct {
	line      int
	user, op  string
	args      []string
	want, src string
}

func parseConfScript(t *testing.T) []confStep {
	var steps []confStep
	for i, line := range strings.Split(confScript, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, want, ok := strings.Cut(line, " = ")
		f := strings.Fields(cmd)
		if !ok || len(f) < 3 {
			t.Fatalf("script line %d: %q", i, line)
		}
		steps = append(steps, confStep{line: i, user: f[0], op: f[1], args: f[2:], want: want, src: line})
	}
	return steps
}

// runConformance runs the script on dir and returns how many steps pass.
func runConformance(t *testing.T, dir string) (pass, total int) {
	bin := worldExecutable(t)
	for _, st := range parseConfScript(t) {
		args := []string{"-test.run=^$", st.op}
		for _, a := range st.args {
			if rest, ok := strings.CutPrefix(a, "$/"); ok {
				a = filepath.Join(dir, rest)
			}
			args = append(args, a)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "FUSEPIPE_HELPER=do")
		if cred := confUsers[st.user]; cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: helper: %v", st.src, err)
		}
		total++
		if got := strings.TrimSpace(string(out)); got != st.want {
			t.Errorf("line %d: %s: got %s", st.line, st.src, got)
			continue
		}
		pass++
	}
	return pass, total
}

// runDo performs one call for the conformance run and says how it went:
// "ok", an errno name, or for stat uid:gid:mode.
func runDo(args []string) string {
	unix.Umask(0o022)
	if len(args) < 2 {
		return "usage"
	}
	op, p := args[0], args[1]
	num := func(i int) int {
		n, _ := strconv.ParseInt(args[i], 0, 64)
		return int(n)
	}
	openDo := func(flags int, f func(fd int) error) error {
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return f(fd)
	}
	nop := func(int) error { return nil }
	var err error
	switch op {
	case "create":
		var fd int
		if fd, err = unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, uint32(num(2))); err == nil {
			unix.Close(fd)
		}
	case "open-r":
		err = openDo(unix.O_RDONLY, nop)
	case "open-w":
		err = openDo(unix.O_WRONLY, nop)
	case "write":
		err = openDo(unix.O_WRONLY, func(fd int) error { _, err := unix.Write(fd, []byte("x")); return err })
	case "ftruncate-ro":
		err = openDo(unix.O_RDONLY, func(fd int) error { return unix.Ftruncate(fd, 0) })
	case "ftruncate-w":
		err = openDo(unix.O_WRONLY, func(fd int) error { return unix.Ftruncate(fd, 0) })
	case "chmod":
		err = unix.Chmod(p, uint32(num(2)))
	case "chown":
		err = unix.Lchown(p, num(2), num(3))
	case "unlink":
		err = unix.Unlink(p)
	case "rmdir":
		err = unix.Rmdir(p)
	case "mkdir":
		err = unix.Mkdir(p, uint32(num(2)))
	case "mkfifo":
		err = unix.Mkfifo(p, uint32(num(2)))
	case "mknod-c":
		err = unix.Mknod(p, unix.S_IFCHR|uint32(num(2)), int(unix.Mkdev(uint32(num(3)), uint32(num(4)))))
	case "rename":
		err = unix.Rename(p, args[2])
	case "link":
		err = unix.Link(p, args[2])
	case "symlink":
		err = unix.Symlink(args[2], p)
	case "utime-now":
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}, 0)
	case "utime-set":
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}, 0)
	case "truncate":
		err = unix.Truncate(p, int64(num(2)))
	case "stat":
		var st unix.Stat_t
		if err = unix.Lstat(p, &st); err == nil {
			return fmt.Sprintf("%d:%d:%o", st.Uid, st.Gid, st.Mode)
		}
	default:
		return "unknown op " + op
	}
	if errno, ok := err.(syscall.Errno); ok {
		return unix.ErrnoName(errno)
	} else if err != nil {
		return err.Error()
	}
	return "ok"
}

// worldDir is a fresh directory every user can reach.
func worldDir(t *testing.T) string {
	dir := t.TempDir()
	for d := dir; d != os.TempDir(); d = filepath.Dir(d) {
		check(t, os.Chmod(d, 0o755))
	}
	return dir
}

func TestConformanceOtherUsers(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		pass, total := runConformance(t, worldDir(t))
		t.Logf("local directory: %d of %d checks pass", pass, total)
	})
	t.Run("fusepipe", func(t *testing.T) {
		s := newShare(t, shareOpts{worldReadable: true})
		pass, total := runConformance(t, s.mnt)
		t.Logf("fuse-pipe mount: %d of %d checks pass", pass, total)
		// Whatever the guest users did, the host got nothing that
		// grants privileges, and every file is still the server's.
		noHostPrivilege(t, s.dir)
	})
}
