package fusepipe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The POSIX behaviour suite: each test does through the mount what a
// program would do on a local disk and checks what it sees, on the mount
// and on the host directory behind it.

func mustErrno(t *testing.T, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

// hostOverride reads the override xattr of a host file, "" if none.
func hostOverride(t *testing.T, path string) string {
	t.Helper()
	buf := make([]byte, 128)
	n, err := unix.Lgetxattr(path, overrideXattr, buf)
	if err == unix.ENODATA {
		return ""
	}
	check(t, err)
	return string(buf[:n])
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFiles(t *testing.T) {
	s := newShare(t, shareOpts{})
	m, h := s.mnt, s.dir

	t.Run("create write read", func(t *testing.T) {
		check(t, os.WriteFile(filepath.Join(m, "f"), []byte("hello world"), 0o640))
		got, err := os.ReadFile(filepath.Join(h, "f"))
		check(t, err)
		if string(got) != "hello world" {
			t.Fatalf("host sees %q", got)
		}
		st, err := os.Stat(filepath.Join(m, "f"))
		check(t, err)
		if st.Size() != 11 || st.Mode().Perm() != 0o640 {
			t.Fatalf("stat: size %d mode %v", st.Size(), st.Mode())
		}
		got, err = os.ReadFile(filepath.Join(m, "f"))
		check(t, err)
		if string(got) != "hello world" {
			t.Fatalf("mount reads %q", got)
		}
	})
	t.Run("exclusive create", func(t *testing.T) {
		_, err := os.OpenFile(filepath.Join(m, "f"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		mustErrno(t, err, syscall.EEXIST)
	})
	t.Run("missing", func(t *testing.T) {
		_, err := os.Stat(filepath.Join(m, "nope"))
		mustErrno(t, err, syscall.ENOENT)
		_, err = os.Open(filepath.Join(m, "nope", "x"))
		mustErrno(t, err, syscall.ENOENT)
		mustErrno(t, os.Remove(filepath.Join(m, "nope")), syscall.ENOENT)
	})
	t.Run("append", func(t *testing.T) {
		f, err := os.OpenFile(filepath.Join(m, "f"), os.O_APPEND|os.O_WRONLY, 0)
		check(t, err)
		_, err = f.WriteString("!")
		check(t, err)
		check(t, f.Close())
		got, _ := os.ReadFile(filepath.Join(h, "f"))
		if string(got) != "hello world!" {
			t.Fatalf("host sees %q", got)
		}
	})
	t.Run("truncate", func(t *testing.T) {
		check(t, os.Truncate(filepath.Join(m, "f"), 5))
		got, _ := os.ReadFile(filepath.Join(m, "f"))
		if string(got) != "hello" {
			t.Fatalf("after truncate %q", got)
		}
		f, err := os.OpenFile(filepath.Join(m, "f"), os.O_RDWR, 0)
		check(t, err)
		check(t, f.Truncate(2))
		check(t, f.Close())
		st, _ := os.Stat(filepath.Join(h, "f"))
		if st.Size() != 2 {
			t.Fatalf("host size %d", st.Size())
		}
		f, err = os.OpenFile(filepath.Join(m, "f"), os.O_WRONLY|os.O_TRUNC, 0)
		check(t, err)
		check(t, f.Close())
		st, _ = os.Stat(filepath.Join(m, "f"))
		if st.Size() != 0 {
			t.Fatalf("O_TRUNC left %d bytes", st.Size())
		}
	})
	t.Run("chmod chown utimens", func(t *testing.T) {
		p := filepath.Join(m, "f")
		check(t, os.Chmod(p, 0o600))
		check(t, os.Chown(p, 1234, 5678))
		when := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
		check(t, os.Chtimes(p, when, when))
		// The guest's owner lives in the override; the host file stays
		// the server's.
		var st unix.Stat_t
		check(t, unix.Stat(filepath.Join(h, "f"), &st))
		if st.Mode&0o7777 != 0o600 || st.Uid != uint32(os.Getuid()) || st.Gid != uint32(os.Getgid()) || st.Mtim.Sec != when.Unix() || st.Mtim.Nsec != 7000 {
			t.Fatalf("host stat: mode %o uid %d gid %d mtime %v", st.Mode, st.Uid, st.Gid, st.Mtim)
		}
		if got := hostOverride(t, filepath.Join(h, "f")); got != "1234:5678:0600:file" {
			t.Fatalf("host override %q", got)
		}
		check(t, unix.Stat(p, &st))
		if st.Mode&0o7777 != 0o600 || st.Uid != 1234 || st.Gid != 5678 || st.Mtim.Sec != when.Unix() {
			t.Fatalf("mount stat: mode %o uid %d gid %d mtime %v", st.Mode, st.Uid, st.Gid, st.Mtim)
		}
		check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}, 0))
		check(t, unix.Stat(filepath.Join(h, "f"), &st))
		if time.Since(time.Unix(st.Mtim.Unix())) > time.Minute {
			t.Fatalf("UTIME_NOW left mtime %v", st.Mtim)
		}
		check(t, os.Chown(p, 0, 0))
	})
	t.Run("host changes show up", func(t *testing.T) {
		check(t, os.WriteFile(filepath.Join(h, "fromhost"), []byte("v1"), 0o644))
		got, err := os.ReadFile(filepath.Join(m, "fromhost"))
		check(t, err)
		if string(got) != "v1" {
			t.Fatalf("got %q", got)
		}
		time.Sleep(10 * time.Millisecond) // a different mtime
		check(t, os.WriteFile(filepath.Join(h, "fromhost"), []byte("v2 longer"), 0o644))
		deadline := time.Now().Add(3 * time.Second)
		for {
			got, err = os.ReadFile(filepath.Join(m, "fromhost"))
			check(t, err)
			if string(got) == "v2 longer" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("guest still sees %q", got)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("fsync", func(t *testing.T) {
		f, err := os.Create(filepath.Join(m, "synced"))
		check(t, err)
		defer f.Close()
		_, err = f.WriteString("durable")
		check(t, err)
		check(t, f.Sync())
		check(t, unix.Fdatasync(int(f.Fd())))
		got, _ := os.ReadFile(filepath.Join(h, "synced"))
		if string(got) != "durable" {
			t.Fatalf("after fsync host sees %q", got)
		}
		d, err := os.Open(m)
		check(t, err)
		check(t, d.Sync())
		d.Close()
	})
	t.Run("statfs", func(t *testing.T) {
		var got, want unix.Statfs_t
		check(t, unix.Statfs(m, &got))
		check(t, unix.Statfs(h, &want))
		if got.Blocks != want.Blocks || got.Bsize != want.Bsize {
			t.Fatalf("statfs blocks %d bsize %d, host %d %d", got.Blocks, got.Bsize, want.Blocks, want.Bsize)
		}
	})
	t.Run("xattr", func(t *testing.T) {
		p := filepath.Join(m, "synced")
		check(t, unix.Setxattr(p, "user.color", []byte("blue"), 0))
		buf := make([]byte, 64)
		n, err := unix.Getxattr(p, "user.color", buf)
		check(t, err)
		if string(buf[:n]) != "blue" {
			t.Fatalf("getxattr %q", buf[:n])
		}
		n, err = unix.Getxattr(filepath.Join(h, "synced"), "user.color", buf)
		check(t, err)
		if string(buf[:n]) != "blue" {
			t.Fatalf("host getxattr %q", buf[:n])
		}
		n, err = unix.Listxattr(p, buf)
		check(t, err)
		if !bytes.Contains(buf[:n], []byte("user.color\x00")) {
			t.Fatalf("listxattr %q", buf[:n])
		}
		_, err = unix.Getxattr(p, "user.color", buf[:2])
		mustErrno(t, err, syscall.ERANGE)
		check(t, unix.Removexattr(p, "user.color"))
		_, err = unix.Getxattr(p, "user.color", buf)
		mustErrno(t, err, syscall.ENODATA)
		mustErrno(t, unix.Setxattr(p, "user.x", []byte("1"), unix.XATTR_REPLACE), syscall.ENODATA)
	})
	t.Run("fallocate", func(t *testing.T) {
		f, err := os.Create(filepath.Join(m, "alloc"))
		check(t, err)
		defer f.Close()
		check(t, unix.Fallocate(int(f.Fd()), 0, 0, 1<<20))
		st, _ := os.Stat(filepath.Join(h, "alloc"))
		if st.Size() != 1<<20 {
			t.Fatalf("host size %d", st.Size())
		}
		check(t, unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE|unix.FALLOC_FL_PUNCH_HOLE, 0, 4096))
	})
	t.Run("copy_file_range", func(t *testing.T) {
		src, err := os.Open(filepath.Join(m, "f"))
		check(t, err)
		defer src.Close()
		check(t, os.WriteFile(filepath.Join(m, "cfr-src"), bytes.Repeat([]byte("x"), 100000), 0o644))
		in, err := os.Open(filepath.Join(m, "cfr-src"))
		check(t, err)
		defer in.Close()
		out, err := os.Create(filepath.Join(m, "cfr-dst"))
		check(t, err)
		n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, 100000, 0)
		check(t, err)
		check(t, out.Close())
		got, _ := os.ReadFile(filepath.Join(h, "cfr-dst"))
		if n != 100000 || len(got) != 100000 {
			t.Fatalf("copied %d, host has %d", n, len(got))
		}
	})
	t.Run("fifo", func(t *testing.T) {
		p := filepath.Join(m, "fifo")
		check(t, unix.Mkfifo(p, 0o644))
		// On the host it is an empty regular file the server never
		// opens; the override makes it a FIFO in the guest.
		st, err := os.Lstat(filepath.Join(h, "fifo"))
		check(t, err)
		if !st.Mode().IsRegular() || st.Size() != 0 {
			t.Fatalf("host mode %v size %d", st.Mode(), st.Size())
		}
		if got := hostOverride(t, filepath.Join(h, "fifo")); got != "0:0:0644:pipe" {
			t.Fatalf("host override %q", got)
		}
		st, err = os.Lstat(p)
		check(t, err)
		if st.Mode()&os.ModeNamedPipe == 0 || st.Mode().Perm() != 0o644 {
			t.Fatalf("mount mode %v", st.Mode())
		}
		// The guest kernel runs the pipe; data never crosses the wire.
		done := make(chan error, 1)
		go func() {
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err == nil {
				_, err = w.WriteString("through the pipe")
				w.Close()
			}
			done <- err
		}()
		r, err := os.Open(p)
		check(t, err)
		got, err := io.ReadAll(r)
		r.Close()
		check(t, err)
		check(t, <-done)
		if string(got) != "through the pipe" {
			t.Fatalf("fifo read %q", got)
		}
		// A device node shows as one in the guest, is a plain file on
		// the host, and opens nothing: the mount is nodev.
		null := filepath.Join(m, "null")
		check(t, unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		var dst unix.Stat_t
		check(t, unix.Stat(null, &dst))
		if dst.Mode != unix.S_IFCHR|0o644 || dst.Rdev != unix.Mkdev(1, 3) {
			t.Fatalf("mount: mode %o rdev %#x", dst.Mode, dst.Rdev)
		}
		_, err = os.OpenFile(null, os.O_RDWR, 0)
		mustErrno(t, err, syscall.EACCES)
		if st, err := os.Lstat(filepath.Join(h, "null")); err != nil || !st.Mode().IsRegular() || st.Size() != 0 {
			t.Fatalf("host: %v %v", st.Mode(), err)
		}
	})
}

func TestDirectories(t *testing.T) {
	s := newShare(t, shareOpts{})
	m, h := s.mnt, s.dir

	t.Run("mkdir rmdir", func(t *testing.T) {
		check(t, os.Mkdir(filepath.Join(m, "d"), 0o750))
		st, err := os.Stat(filepath.Join(h, "d"))
		check(t, err)
		if !st.IsDir() || st.Mode().Perm() != 0o750 {
			t.Fatalf("host sees %v", st.Mode())
		}
		mustErrno(t, os.Mkdir(filepath.Join(m, "d"), 0o750), syscall.EEXIST)
		check(t, os.WriteFile(filepath.Join(m, "d", "x"), nil, 0o644))
		mustErrno(t, unix.Rmdir(filepath.Join(m, "d")), syscall.ENOTEMPTY)
		mustErrno(t, unix.Rmdir(filepath.Join(m, "d", "x")), syscall.ENOTDIR)
		mustErrno(t, unix.Unlink(filepath.Join(m, "d")), syscall.EISDIR)
		_, err = os.OpenFile(filepath.Join(m, "d"), os.O_WRONLY, 0)
		mustErrno(t, err, syscall.EISDIR)
		check(t, os.Remove(filepath.Join(m, "d", "x")))
		check(t, unix.Rmdir(filepath.Join(m, "d")))
		_, err = os.Stat(filepath.Join(h, "d"))
		mustErrno(t, err, syscall.ENOENT)
	})
	t.Run("10k entries", func(t *testing.T) {
		dir := filepath.Join(h, "big")
		check(t, os.Mkdir(dir, 0o755))
		want := make([]string, 10000)
		for i := range want {
			want[i] = fmt.Sprintf("entry-%05d-with-a-longish-name", i)
			f, err := os.Create(filepath.Join(dir, want[i]))
			check(t, err)
			f.Close()
		}
		for range 2 { // a second listing comes from the kernel's cache
			ents, err := os.ReadDir(filepath.Join(m, "big"))
			check(t, err)
			var got []string
			for _, e := range ents {
				got = append(got, e.Name())
				if e.Type() != 0 {
					t.Fatalf("%s has type %v", e.Name(), e.Type())
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("listed %d entries, want %d", len(got), len(want))
			}
		}
		// Every entry is stat-able (readdirplus filled the caches, or
		// lookups do).
		for _, n := range want[:100] {
			if _, err := os.Stat(filepath.Join(m, "big", n)); err != nil {
				t.Fatal(err)
			}
		}
		// A change on the host invalidates the cached listing.
		check(t, os.Remove(filepath.Join(dir, want[0])))
		time.Sleep(1100 * time.Millisecond)
		ents, err := os.ReadDir(filepath.Join(m, "big"))
		check(t, err)
		if len(ents) != 9999 {
			t.Fatalf("after host unlink: %d entries", len(ents))
		}
	})
	t.Run("seekdir", func(t *testing.T) {
		d, err := os.Open(filepath.Join(m, "big"))
		check(t, err)
		defer d.Close()
		first, err := d.Readdirnames(10)
		check(t, err)
		_, err = d.Seek(0, io.SeekStart)
		check(t, err)
		again, err := d.Readdirnames(10)
		check(t, err)
		if !slices.Equal(first, again) {
			t.Fatalf("rewind: %v then %v", first, again)
		}
	})
}

func TestLinksAndRenames(t *testing.T) {
	s := newShare(t, shareOpts{})
	m, h := s.mnt, s.dir
	check(t, os.WriteFile(filepath.Join(m, "a"), []byte("A"), 0o644))
	check(t, os.WriteFile(filepath.Join(m, "b"), []byte("B"), 0o644))

	t.Run("hard link", func(t *testing.T) {
		check(t, os.Link(filepath.Join(m, "a"), filepath.Join(m, "a2")))
		var s1, s2 unix.Stat_t
		check(t, unix.Stat(filepath.Join(m, "a"), &s1))
		check(t, unix.Stat(filepath.Join(m, "a2"), &s2))
		if s1.Ino != s2.Ino || s2.Nlink != 2 {
			t.Fatalf("ino %d/%d nlink %d", s1.Ino, s2.Ino, s2.Nlink)
		}
		mustErrno(t, os.Link(filepath.Join(m, "a"), filepath.Join(m, "b")), syscall.EEXIST)
		check(t, os.Remove(filepath.Join(m, "a2")))
	})
	t.Run("symlink", func(t *testing.T) {
		check(t, os.Symlink("a", filepath.Join(m, "lnk")))
		target, err := os.Readlink(filepath.Join(h, "lnk"))
		check(t, err)
		if target != "a" {
			t.Fatalf("host link %q", target)
		}
		target, err = os.Readlink(filepath.Join(m, "lnk"))
		check(t, err)
		got, err := os.ReadFile(filepath.Join(m, "lnk"))
		check(t, err)
		if target != "a" || string(got) != "A" {
			t.Fatalf("readlink %q, read through %q", target, got)
		}
		st, err := os.Lstat(filepath.Join(m, "lnk"))
		check(t, err)
		if st.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("lstat mode %v", st.Mode())
		}
		mustErrno(t, os.Symlink("a", filepath.Join(m, "lnk")), syscall.EEXIST)
	})
	t.Run("rename", func(t *testing.T) {
		check(t, os.WriteFile(filepath.Join(m, "r1"), []byte("R1"), 0o644))
		check(t, os.Mkdir(filepath.Join(m, "sub"), 0o755))
		check(t, os.Rename(filepath.Join(m, "r1"), filepath.Join(m, "sub", "r2")))
		got, err := os.ReadFile(filepath.Join(h, "sub", "r2"))
		check(t, err)
		if string(got) != "R1" {
			t.Fatalf("host sees %q", got)
		}
		_, err = os.Stat(filepath.Join(m, "r1"))
		mustErrno(t, err, syscall.ENOENT)
		mustErrno(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(m, "a"), unix.AT_FDCWD, filepath.Join(m, "b"), unix.RENAME_NOREPLACE), syscall.EEXIST)
		check(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(m, "a"), unix.AT_FDCWD, filepath.Join(m, "b"), unix.RENAME_EXCHANGE))
		ga, _ := os.ReadFile(filepath.Join(m, "a"))
		gb, _ := os.ReadFile(filepath.Join(m, "b"))
		if string(ga) != "B" || string(gb) != "A" {
			t.Fatalf("after exchange a=%q b=%q", ga, gb)
		}
		check(t, os.Mkdir(filepath.Join(m, "full"), 0o755))
		check(t, os.WriteFile(filepath.Join(m, "full", "x"), nil, 0o644))
		check(t, os.Mkdir(filepath.Join(m, "empty"), 0o755))
		// rename(2) itself: os.Rename refuses directory targets early.
		mustErrno(t, unix.Rename(filepath.Join(m, "empty"), filepath.Join(m, "full")), syscall.ENOTEMPTY)
		mustErrno(t, unix.Rename(filepath.Join(m, "empty"), filepath.Join(m, "a")), syscall.ENOTDIR)
		mustErrno(t, unix.Rename(filepath.Join(m, "a"), filepath.Join(m, "full")), syscall.EISDIR)
		check(t, unix.Rename(filepath.Join(m, "empty"), filepath.Join(m, "sub2")))
	})
	t.Run("rename over open file", func(t *testing.T) {
		check(t, os.WriteFile(filepath.Join(m, "old"), []byte("old content"), 0o644))
		check(t, os.WriteFile(filepath.Join(m, "new"), []byte("new content"), 0o644))
		f, err := os.Open(filepath.Join(m, "old"))
		check(t, err)
		defer f.Close()
		check(t, os.Rename(filepath.Join(m, "new"), filepath.Join(m, "old")))
		got, err := io.ReadAll(f)
		check(t, err)
		if string(got) != "old content" {
			t.Fatalf("open file reads %q", got)
		}
		got, _ = os.ReadFile(filepath.Join(m, "old"))
		if string(got) != "new content" {
			t.Fatalf("name reads %q", got)
		}
	})
	t.Run("unlink open file", func(t *testing.T) {
		f, err := os.Create(filepath.Join(m, "doomed"))
		check(t, err)
		defer f.Close()
		check(t, os.Remove(filepath.Join(m, "doomed")))
		_, err = os.Stat(filepath.Join(h, "doomed"))
		mustErrno(t, err, syscall.ENOENT)
		_, err = f.WriteAt([]byte("still here"), 0)
		check(t, err)
		got := make([]byte, 10)
		_, err = f.ReadAt(got, 0)
		check(t, err)
		if string(got) != "still here" {
			t.Fatalf("read back %q", got)
		}
		st, err := f.Stat()
		check(t, err)
		if st.Sys().(*syscall.Stat_t).Nlink != 0 {
			t.Fatalf("nlink %d", st.Sys().(*syscall.Stat_t).Nlink)
		}
	})
}

func TestEXDEVAcrossVolumes(t *testing.T) {
	a := newShare(t, shareOpts{})
	b := newShare(t, shareOpts{})
	check(t, os.WriteFile(filepath.Join(a.mnt, "f"), []byte("x"), 0o644))
	mustErrno(t, os.Rename(filepath.Join(a.mnt, "f"), filepath.Join(b.mnt, "f")), syscall.EXDEV)
	mustErrno(t, os.Link(filepath.Join(a.mnt, "f"), filepath.Join(b.mnt, "f")), syscall.EXDEV)
}

func TestPermissions(t *testing.T) {
	s := newShare(t, shareOpts{worldReadable: true})
	p := filepath.Join(s.mnt, "private")
	check(t, os.WriteFile(p, []byte("secret"), 0o600))
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if got := startHelper(t, "open", p, nobody).line(t); got != "open "+p+": permission denied" {
		t.Fatalf("nobody opening a 0600 root file: %q", got)
	}
	check(t, os.Chmod(p, 0o644))
	if got := startHelper(t, "open", p, nobody).line(t); got != "ok" {
		t.Fatalf("nobody opening a 0644 file: %q", got)
	}
}

func TestReadOnly(t *testing.T) {
	s := newShare(t, shareOpts{readOnly: true})
	m := s.mnt
	check(t, os.WriteFile(filepath.Join(s.dir, "f"), []byte("ro"), 0o644))
	check(t, os.Mkdir(filepath.Join(s.dir, "d"), 0o755))
	got, err := os.ReadFile(filepath.Join(m, "f"))
	check(t, err)
	if string(got) != "ro" {
		t.Fatalf("read %q", got)
	}
	_, err = os.OpenFile(filepath.Join(m, "f"), os.O_WRONLY, 0)
	mustErrno(t, err, syscall.EROFS)
	_, err = os.Create(filepath.Join(m, "new"))
	mustErrno(t, err, syscall.EROFS)
	mustErrno(t, os.Mkdir(filepath.Join(m, "new"), 0o755), syscall.EROFS)
	mustErrno(t, os.Remove(filepath.Join(m, "f")), syscall.EROFS)
	mustErrno(t, os.Remove(filepath.Join(m, "d")), syscall.EROFS)
	mustErrno(t, os.Rename(filepath.Join(m, "f"), filepath.Join(m, "g")), syscall.EROFS)
	mustErrno(t, os.Chmod(filepath.Join(m, "f"), 0o777), syscall.EROFS)
	mustErrno(t, os.Truncate(filepath.Join(m, "f"), 0), syscall.EROFS)
	mustErrno(t, os.Symlink("f", filepath.Join(m, "l")), syscall.EROFS)
	mustErrno(t, unix.Setxattr(filepath.Join(m, "f"), "user.x", []byte("1"), 0), syscall.EROFS)
	got, _ = os.ReadFile(filepath.Join(s.dir, "f"))
	if string(got) != "ro" {
		t.Fatalf("host file changed to %q", got)
	}
}

func TestSparseFile(t *testing.T) {
	s := newShare(t, shareOpts{})
	f, err := os.Create(filepath.Join(s.mnt, "sparse"))
	check(t, err)
	defer f.Close()
	const size = 1 << 30
	const dataAt = 512 << 20
	_, err = f.WriteAt([]byte("island"), dataAt)
	check(t, err)
	check(t, f.Truncate(size))
	check(t, f.Sync())
	st, err := os.Stat(filepath.Join(s.dir, "sparse"))
	check(t, err)
	if st.Size() != size || st.Sys().(*syscall.Stat_t).Blocks > 1024 {
		t.Fatalf("host: size %d blocks %d", st.Size(), st.Sys().(*syscall.Stat_t).Blocks)
	}
	fd := int(f.Fd())
	off, err := unix.Seek(fd, 0, unix.SEEK_DATA)
	check(t, err)
	if off > dataAt || off < dataAt-(1<<20) {
		t.Fatalf("SEEK_DATA from 0: %d", off)
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	check(t, err)
	if hole <= dataAt || hole > dataAt+(1<<20) {
		t.Fatalf("SEEK_HOLE from data: %d", hole)
	}
	_, err = unix.Seek(fd, hole+4096, unix.SEEK_DATA)
	mustErrno(t, err, syscall.ENXIO)
	buf := make([]byte, 6)
	_, err = f.ReadAt(buf, dataAt)
	check(t, err)
	if string(buf) != "island" {
		t.Fatalf("read %q", buf)
	}
	_, err = f.ReadAt(buf, size-6)
	check(t, err)
	if !bytes.Equal(buf, make([]byte, 6)) {
		t.Fatalf("hole reads %q", buf)
	}
}

func TestConcurrentWriters(t *testing.T) {
	s := newShare(t, shareOpts{})
	const workers, chunk, chunks = 8, 64 << 10, 16
	t.Run("different files", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				data := bytes.Repeat([]byte{byte('a' + w)}, chunk)
				f, err := os.Create(filepath.Join(s.mnt, fmt.Sprintf("w%d", w)))
				if err != nil {
					errs <- err
					return
				}
				for range chunks {
					if _, err := f.Write(data); err != nil {
						errs <- err
					}
				}
				errs <- f.Close()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			check(t, err)
		}
		for w := range workers {
			got, err := os.ReadFile(filepath.Join(s.dir, fmt.Sprintf("w%d", w)))
			check(t, err)
			if !bytes.Equal(got, bytes.Repeat([]byte{byte('a' + w)}, chunk*chunks)) {
				t.Fatalf("file %d: %d bytes, wrong content", w, len(got))
			}
		}
	})
	t.Run("one file", func(t *testing.T) {
		f, err := os.Create(filepath.Join(s.mnt, "shared"))
		check(t, err)
		var wg sync.WaitGroup
		errs := make(chan error, workers*chunks)
		for w := range workers {
			wg.Go(func() {
				data := bytes.Repeat([]byte{byte('A' + w)}, chunk)
				for c := range chunks {
					_, err := f.WriteAt(data, int64((c*workers+w)*chunk))
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			check(t, err)
		}
		check(t, f.Close())
		got, err := os.ReadFile(filepath.Join(s.dir, "shared"))
		check(t, err)
		if len(got) != workers*chunks*chunk {
			t.Fatalf("size %d", len(got))
		}
		for i := 0; i < len(got); i += chunk {
			want := byte('A' + (i/chunk)%workers)
			if !bytes.Equal(got[i:i+chunk], bytes.Repeat([]byte{want}, chunk)) {
				t.Fatalf("chunk at %d is not %c", i, want)
			}
		}
	})
}

func TestLocks(t *testing.T) {
	s := newShare(t, shareOpts{})
	p := filepath.Join(s.mnt, "lockfile")
	check(t, os.WriteFile(p, []byte("x"), 0o644))

	t.Run("posix between processes", func(t *testing.T) {
		h := startHelper(t, "posixlock", p, nil)
		if got := h.line(t); got != "locked" {
			t.Fatalf("helper: %s", got)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		check(t, err)
		defer f.Close()
		lk := unix.Flock_t{Type: unix.F_WRLCK}
		check(t, unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk))
		if lk.Type != unix.F_WRLCK {
			t.Fatalf("F_GETLK sees type %d, want the helper's write lock", lk.Type)
		}
		mustErrno(t, unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}), syscall.EAGAIN)
		// A host process sees the guest's lock too.
		hf, err := os.OpenFile(filepath.Join(s.dir, "lockfile"), os.O_RDWR, 0)
		check(t, err)
		defer hf.Close()
		mustErrno(t, unix.FcntlFlock(hf.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}), syscall.EAGAIN)
		// Blocking waits until the helper exits and its close drops it.
		got := make(chan error, 1)
		go func() { got <- unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &unix.Flock_t{Type: unix.F_WRLCK}) }()
		time.Sleep(50 * time.Millisecond)
		h.stdin.Close()
		select {
		case err := <-got:
			check(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("F_SETLKW still waiting 5s after the holder exited")
		}
		// Closing any descriptor drops this process's locks.
		f2, err := os.Open(p)
		check(t, err)
		f2.Close()
		check(t, unix.FcntlFlock(hf.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}))
		check(t, unix.FcntlFlock(hf.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_UNLCK}))
	})
	t.Run("flock between processes", func(t *testing.T) {
		h := startHelper(t, "flock", p, nil)
		if got := h.line(t); got != "locked" {
			t.Fatalf("helper: %s", got)
		}
		f, err := os.Open(p)
		check(t, err)
		defer f.Close()
		mustErrno(t, unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB), syscall.EWOULDBLOCK)
		got := make(chan error, 1)
		go func() { got <- unix.Flock(int(f.Fd()), unix.LOCK_EX) }()
		time.Sleep(50 * time.Millisecond)
		h.stdin.Close()
		select {
		case err := <-got:
			check(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("flock still waiting 5s after the holder exited")
		}
		check(t, unix.Flock(int(f.Fd()), unix.LOCK_UN))
	})
}

// The mount answers the kernel's per-write question for
// security.capability from a cache that lives as long as attributes do:
// a capability the host sets shows up after the attribute timeout, one the
// guest sets or removes at once, and writes clear it as on any file
// system.
func TestCapabilityXattrCache(t *testing.T) {
	const attrTimeout = 200 * time.Millisecond
	s := newShare(t, shareOpts{mount: MountOptions{AttrTimeout: attrTimeout}})
	m, h := filepath.Join(s.mnt, "tool"), filepath.Join(s.dir, "tool")
	check(t, os.WriteFile(h, []byte("#!/bin/sh\n"), 0o755))
	// A VFS v2 capability: CAP_NET_BIND_SERVICE permitted and effective.
	capv := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	buf := make([]byte, 64)
	getCaps := func(p string) (int, error) { return unix.Getxattr(p, capsXattr, buf) }

	f, err := os.OpenFile(m, os.O_WRONLY, 0)
	check(t, err)
	for i := range 3 {
		if _, err := f.WriteAt([]byte("x"), int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if _, err := getCaps(m); err != unix.ENODATA {
		t.Fatalf("getxattr %s on a file without: %v, want ENODATA", capsXattr, err)
	}

	check(t, unix.Setxattr(h, capsXattr, capv, 0))
	deadline := time.Now().Add(attrTimeout + 2*time.Second)
	for {
		n, err := getCaps(m)
		if err == nil {
			if !bytes.Equal(buf[:n], capv) {
				t.Fatalf("capability seen through the mount %x, host set %x", buf[:n], capv)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("capability the host set still unseen after %v: %v", time.Since(deadline.Add(-attrTimeout-2*time.Second)), err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Guest-side changes are seen at once. The guest may drop a
	// capability but never set one on a host file.
	check(t, unix.Removexattr(m, capsXattr))
	if _, err := getCaps(m); err != unix.ENODATA {
		t.Fatalf("after removexattr: %v, want ENODATA", err)
	}
	mustErrno(t, unix.Setxattr(m, capsXattr, capv, 0), syscall.EPERM)
	if _, err := getCaps(m); err != unix.ENODATA {
		t.Fatalf("after a refused setxattr: %v, want ENODATA", err)
	}
	if _, err := getCaps(h); err != unix.ENODATA {
		t.Fatalf("host file got the capability the guest asked for: %v", err)
	}
	check(t, unix.Setxattr(h, capsXattr, capv, 0))
	time.Sleep(attrTimeout + 50*time.Millisecond)
	if n, err := getCaps(m); err != nil || !bytes.Equal(buf[:n], capv) {
		t.Fatalf("capability set on the host: %x, %v", buf[:n], err)
	}
	// A write by the owner drops the capability on the host.
	f, err = os.OpenFile(m, os.O_WRONLY, 0)
	check(t, err)
	_, err = f.WriteAt([]byte("y"), 0)
	check(t, err)
	f.Close()
	if _, err := getCaps(h); err != unix.ENODATA {
		t.Errorf("host file keeps its capability after a write through the mount: %v", err)
	}
}
