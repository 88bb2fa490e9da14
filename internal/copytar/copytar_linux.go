package copytar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Limits bound what one extraction may write.
type Limits struct {
	// MaxBytes bounds the file content the headers claim (sparse holes
	// included: they are written out as zeros).
	MaxBytes int64
	// MaxEntries bounds the entries read, kept or not.
	MaxEntries int64
}

// DefaultLimits are fcvm cp's: 16 GiB and a million entries.
var DefaultLimits = Limits{MaxBytes: 16 << 30, MaxEntries: 1 << 20}

// ErrTooLarge is returned when a stream passes its Limits.
var ErrTooLarge = errors.New("copytar: stream exceeds the copy limits")

// Owner is a numeric owner to give every entry.
type Owner struct{ UID, GID int }

// ExtractOptions say how Extract writes entries.
type ExtractOptions struct {
	// Resolve is how names resolve beneath the destination: 0 or
	// unix.RESOLVE_BENEATH makes a name that leads outside an error;
	// unix.RESOLVE_IN_ROOT treats the destination as "/".
	Resolve uint64
	// Top, when set, is the stream's one top-level name: an entry
	// elsewhere is an error. It is written as RenameTo if that is set
	// (cp's FILE to a new name).
	Top, RenameTo string
	// KeepSetuid keeps set-user-ID and set-group-ID bits.
	KeepSetuid bool
	// Owner, if set, owns every entry; otherwise the caller does.
	Owner *Owner
	// Limits; zero fields take DefaultLimits'.
	Limits Limits
	// Skipped, if set, hears of each entry left out and why.
	Skipped func(name, why string)
}

// Extract reads a tar stream from r and creates its entries beneath dir,
// never outside it (see the package comment).
func Extract(r io.Reader, dir *os.File, o ExtractOptions) error {
	if o.Resolve == 0 {
		o.Resolve = unix.RESOLVE_BENEATH
	}
	if o.Limits.MaxBytes <= 0 {
		o.Limits.MaxBytes = DefaultLimits.MaxBytes
	}
	if o.Limits.MaxEntries <= 0 {
		o.Limits.MaxEntries = DefaultLimits.MaxEntries
	}
	x := &extractor{root: int(dir.Fd()), o: o}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar stream: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Directory times last: their entries changed them.
	for i := len(x.dirTimes) - 1; i >= 0; i-- {
		d := x.dirTimes[i]
		x.setTime(d.name, d.mtime)
	}
	return nil
}

type dirTime struct {
	name  string
	mtime time.Time
}

type extractor struct {
	root     int
	o        ExtractOptions
	entries  int64
	bytes    int64
	dirTimes []dirTime
}

func (x *extractor) skip(name, why string) {
	if x.o.Skipped != nil {
		x.o.Skipped(name, why)
	}
}

// name is hdr's name, cleaned (no "..", no leading "/") and renamed.
func (x *extractor) name(n string) (string, error) {
	n = strings.TrimPrefix(path.Clean("/"+n), "/")
	if x.o.Top != "" {
		first, rest, _ := strings.Cut(n, "/")
		if first != x.o.Top {
			return "", fmt.Errorf("copy: entry %q is not under %q, the one name the stream may hold", n, x.o.Top)
		}
		if x.o.RenameTo != "" {
			n = x.o.RenameTo
			if rest != "" {
				n += "/" + rest
			}
		}
	}
	if n == "" {
		return ".", nil
	}
	return n, nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	x.entries++
	if x.entries > x.o.Limits.MaxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrTooLarge, x.o.Limits.MaxEntries)
	}
	name, err := x.name(hdr.Name)
	if err != nil {
		return err
	}
	if name == "." {
		return nil // the destination itself is the caller's
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		x.skip(name, "device nodes and FIFOs are not copied")
		return nil
	default:
		x.skip(name, fmt.Sprintf("tar entry type %q is not copied", hdr.Typeflag))
		return nil
	}
	if hdr.Typeflag == tar.TypeReg {
		x.bytes += hdr.Size
		if hdr.Size < 0 || x.bytes > x.o.Limits.MaxBytes {
			return fmt.Errorf("%w: more than %d bytes (at %s)", ErrTooLarge, x.o.Limits.MaxBytes, name)
		}
	}
	var target string
	if hdr.Typeflag == tar.TypeLink {
		if target, err = x.name(hdr.Linkname); err != nil {
			return err
		}
	}
	parent, base := path.Dir(name), path.Base(name)
	pfd, err := x.parent(parent)
	if err != nil {
		return fmt.Errorf("copy %s: %w", name, err)
	}
	defer unix.Close(pfd)
	perm := uint32(hdr.Mode) & 0o7777
	if !x.o.KeepSetuid {
		perm &^= unix.S_ISUID | unix.S_ISGID
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		err = x.file(pfd, base, perm, hdr.Size, r)
	case tar.TypeDir:
		err = x.dir(pfd, base, perm)
		if err == nil && len(x.dirTimes) < 1<<16 {
			x.dirTimes = append(x.dirTimes, dirTime{name, hdr.ModTime})
		}
	case tar.TypeSymlink:
		err = x.symlink(pfd, base, hdr.Linkname)
	case tar.TypeLink:
		err = x.hardlink(pfd, base, target)
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", name, err)
	}
	if x.o.Owner != nil {
		unix.Fchownat(pfd, base, x.o.Owner.UID, x.o.Owner.GID, unix.AT_SYMLINK_NOFOLLOW)
	}
	if hdr.Typeflag != tar.TypeDir && hdr.Typeflag != tar.TypeLink {
		ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
		unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// open opens name beneath the root as the options say.
func (x *extractor) open(name string, flags uint64) (int, error) {
	return unix.Openat2(x.root, name, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: x.o.Resolve | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// parent opens dir beneath the root, making the directories missing.
func (x *extractor) parent(dir string) (int, error) {
	fd, err := x.open(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil || !errors.Is(err, unix.ENOENT) || dir == "." {
		return fd, describe(err)
	}
	up, err := x.parent(path.Dir(dir))
	if err != nil {
		return -1, err
	}
	defer unix.Close(up)
	if err := unix.Mkdirat(up, path.Base(dir), 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	fd, err = x.open(dir, unix.O_PATH|unix.O_DIRECTORY)
	return fd, describe(err)
}

// describe says what openat2's refusals mean here.
func describe(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("the path leads outside the destination (through .. or a symlink): %w", err)
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("too many symlinks, or a /proc magic link: %w", err)
	}
	return err
}

// makeRoom removes what is at base in pfd unless it is a directory and dir
// is wanted; a directory in the way of anything else is an error.
func makeRoom(pfd int, base string, dir bool) (exists bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch {
	case isDir && dir:
		return true, nil
	case isDir:
		return false, errors.New("a directory is in the way")
	}
	return false, unix.Unlinkat(pfd, base, 0)
}

func (x *extractor) file(pfd int, base string, perm uint32, size int64, r io.Reader) error {
	if _, err := makeRoom(pfd, base, false); err != nil {
		return err
	}
	// O_NOFOLLOW|O_EXCL: a symlink or file someone put there since is
	// refused, never written through; O_NONBLOCK: a FIFO never blocks us.
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	if _, err := io.CopyN(f, r, size); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, perm); err != nil {
		return err
	}
	return f.Close()
}

func (x *extractor) dir(pfd int, base string, perm uint32) error {
	exists, err := makeRoom(pfd, base, true)
	if err != nil {
		return err
	}
	if !exists {
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fchmod(fd, perm)
}

func (x *extractor) symlink(pfd int, base, target string) error {
	if _, err := makeRoom(pfd, base, false); err != nil {
		return err
	}
	return unix.Symlinkat(target, pfd, base)
}

func (x *extractor) hardlink(pfd int, base, target string) error {
	tfd, err := x.open(target, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("link to %s: %w", target, describe(err))
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstat(tfd, &st); err != nil || st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("link to %s: not a file", target)
	}
	if _, err := makeRoom(pfd, base, false); err != nil {
		return err
	}
	return unix.Linkat(tfd, "", pfd, base, unix.AT_EMPTY_PATH)
}

func (x *extractor) setTime(name string, t time.Time) {
	pfd, err := x.open(path.Dir(name), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return
	}
	defer unix.Close(pfd)
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	unix.UtimesNanoAt(pfd, path.Base(name), ts, unix.AT_SYMLINK_NOFOLLOW)
}

// Write archives the file, directory or symlink name in dir as tar to w,
// under the name as (a directory's entries under as/). Nothing is
// followed: a symlink is archived as one, and a directory's entries are
// opened relative to it with O_NOFOLLOW. Device nodes, FIFOs and sockets
// are left out, each reported to skipped if it is set.
func Write(w io.Writer, dir *os.File, name, as string, skipped func(name, why string)) error {
	tw := tar.NewWriter(w)
	if err := writeEntry(tw, int(dir.Fd()), name, as, skipped); err != nil {
		return err
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, dirfd int, name, as string, skipped func(name, why string)) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("read %s: %w", as, err)
	}
	hdr := &tar.Header{
		Name:    as,
		Mode:    int64(st.Mode & 0o7777),
		ModTime: time.Unix(st.Mtim.Unix()),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		Format:  tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("read %s: %w", as, err)
		}
		f := os.NewFile(uintptr(fd), as)
		defer f.Close()
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fmt.Errorf("read %s: it changed while being copied", as)
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, f, st.Size); err != nil {
			return fmt.Errorf("read %s: %w (it shrank while being copied?)", as, err)
		}
		return nil
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return fmt.Errorf("read %s: %w", as, err)
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, string(buf[:n])
		return tw.WriteHeader(hdr)
	case unix.S_IFDIR:
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("read %s: %w", as, err)
		}
		d := os.NewFile(uintptr(fd), as)
		defer d.Close()
		hdr.Typeflag = tar.TypeDir
		if as != "." {
			hdr.Name = as + "/"
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		}
		names, err := d.Readdirnames(-1)
		if err != nil {
			return fmt.Errorf("read %s: %w", as, err)
		}
		slices.Sort(names)
		for _, n := range names {
			if err := writeEntry(tw, fd, n, path.Join(as, n), skipped); err != nil {
				return err
			}
		}
		return nil
	}
	if skipped != nil {
		skipped(as, "device nodes, FIFOs and sockets are not copied")
	}
	return nil
}
