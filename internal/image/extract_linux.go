package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// extractor writes a flattened image tar stream into an empty directory,
// keeping ownership, modes, times, xattrs, symlinks, hardlinks and device
// nodes (the last two kinds only as root).
//
// The stream comes from mutate.Extract, which lists the top layer first, so
// a directory's own entry may follow its children: parents are created on
// demand and a directory's metadata is applied at the end. Nothing is ever
// written through a symlink: every parent of an entry must be a directory
// that this extractor created or checked, and an entry under anything else
// is skipped.
//
// An image comes from anyone, and a few kilobytes of tar can claim
// terabytes: a sparse entry's holes cost nothing in the layer but are
// written out as zeros here, and millions of empty entries compress to
// nothing. So what the stream claims is counted before anything is
// written, and the extraction stops at the limits.
type extractor struct {
	root   string
	log    *slog.Logger
	asRoot bool
	limits Limits

	dirs    map[string]bool // relative paths known to be real directories
	meta    []*tar.Header   // directory entries, applied at the end
	pending []*tar.Header   // hardlinks whose target had not arrived yet

	// fixups are debugfs commands that give the disk what an unprivileged
	// extraction could not: owners, device nodes, privileged xattrs.
	fixups     []string
	fixupFiles []string // xattr values for debugfs's ea_set -f

	entries int64 // inodes created, for sizing the disk
	bytes   int64 // file content written
	skipped int

	// What the stream has claimed so far, checked against limits.
	headers int64 // entries read, kept or not
	claimed int64 // sizes (holes included), names, link targets and PAX records
	held    int64 // metadata kept in memory or temp files until the end
}

func newExtractor(root string, log *slog.Logger, limits Limits) *extractor {
	return &extractor{root: root, log: log, asRoot: os.Geteuid() == 0, dirs: map[string]bool{".": true}, limits: limits.orDefault()}
}

// metaSize is what hdr costs beyond its content.
func metaSize(hdr *tar.Header) int64 {
	n := len(hdr.Name) + len(hdr.Linkname)
	for k, v := range hdr.PAXRecords {
		n += len(k) + len(v)
	}
	return int64(n)
}

// claim counts hdr against the limits before anything of it is written.
func (x *extractor) claim(hdr *tar.Header) error {
	x.headers++
	if x.headers > x.limits.MaxEntries || x.entries >= x.limits.MaxEntries {
		return newError(ErrTooLarge, "", nil, "image layers expand past %d entries (at %q): refusing the image", x.limits.MaxEntries, clean(hdr.Name))
	}
	// Each term is at most MaxBytes or a few MiB (archive/tar bounds
	// names and extended headers), so the sums cannot overflow.
	size := hdr.Size
	switch {
	case headerOnly(hdr.Typeflag):
		size = 0 // archive/tar reads no content for these, whatever Size says
	case size < 0 || size > x.limits.MaxBytes:
		size = x.limits.MaxBytes + 1
	}
	x.claimed += size + metaSize(hdr)
	if x.claimed > x.limits.MaxBytes {
		return newError(ErrTooLarge, "", nil, "image layers expand past %s (entry %q claims %s, holes included): refusing the image", limitSize(x.limits.MaxBytes), clean(hdr.Name), humanSize(hdr.Size))
	}
	return nil
}

// headerOnly reports whether entries of type t carry no content.
func headerOnly(t byte) bool {
	switch t {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return true
	}
	return false
}

// hold counts hdr's metadata as kept until the end of the stream.
func (x *extractor) hold(hdr *tar.Header) error { return x.holdBytes(hdr.Name, metaSize(hdr)) }

// holdBytes counts n bytes of name's metadata as kept until the end.
func (x *extractor) holdBytes(name string, n int64) error {
	x.held += n
	if x.held > maxHeld {
		return newError(ErrTooLarge, "", nil, "image layers expand past %s of directory, link and xattr metadata (at %q): refusing the image", limitSize(maxHeld), name)
	}
	return nil
}

// extract reads the whole stream. progress, if set, is called with the
// content bytes written so far.
func (x *extractor) extract(ctx context.Context, r io.Reader, progress func(int64)) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// mutate.Extract writes the tar trailer even when a layer
			// failed, then reports the failure on the pipe: read on to
			// the real end so a truncated image is never taken as whole.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return fmt.Errorf("read image layers: %w", err)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("read image layers: %w", err)
		}
		if err := x.claim(hdr); err != nil {
			return err
		}
		if err := x.entry(hdr, tr); err != nil {
			return err
		}
		if progress != nil {
			progress(x.bytes)
		}
	}
	for _, hdr := range x.pending {
		if err := x.hardlink(hdr, true); err != nil {
			return err
		}
	}
	// Deepest first, so setting a directory's time is not undone by
	// changes to its children.
	sort.SliceStable(x.meta, func(i, j int) bool {
		return strings.Count(x.meta[i].Name, "/") > strings.Count(x.meta[j].Name, "/")
	})
	for _, hdr := range x.meta {
		if err := x.setMeta(filepath.Join(x.root, hdr.Name), hdr, true); err != nil {
			return err
		}
	}
	if x.skipped > 0 {
		x.log.Debug("image entries skipped", "count", x.skipped)
	}
	return nil
}

// clean makes a tar name relative to the root, or returns "" when it
// would leave the root.
func clean(name string) string {
	name = path.Clean("/" + name)[1:]
	if name == "" {
		return "."
	}
	return name
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	rel := clean(hdr.Name)
	hdr.Name = rel
	target := filepath.Join(x.root, rel)
	if rel == "." {
		if hdr.Typeflag == tar.TypeDir {
			x.meta = append(x.meta, hdr)
			return x.hold(hdr)
		}
		return nil
	}
	ok, err := x.parent(path.Dir(rel), true)
	if err != nil || !ok {
		x.skip(hdr, "parent is not a directory")
		return err
	}
	if fi, err := os.Lstat(target); err == nil {
		if fi.IsDir() && hdr.Typeflag == tar.TypeDir && x.dirs[rel] {
			// Made earlier as the parent of an upper layer's entry: this
			// entry brings its metadata.
			x.meta = append(x.meta, hdr)
			return x.hold(hdr)
		}
		// An upper layer's entry wins.
		x.skip(hdr, "already present")
		return nil
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(target, 0o700); err != nil {
			return fmt.Errorf("extract %s: %w", rel, err)
		}
		x.dirs[rel] = true
		x.meta = append(x.meta, hdr)
		if err := x.hold(hdr); err != nil {
			return err
		}
	case tar.TypeReg:
		if err := x.file(target, hdr, r); err != nil {
			return fmt.Errorf("extract %s: %w", rel, err)
		}
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return fmt.Errorf("extract %s: %w", rel, err)
		}
		if err := x.setMeta(target, hdr, false); err != nil {
			return err
		}
	case tar.TypeLink:
		return x.hardlink(hdr, false)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if hdr.Typeflag != tar.TypeFifo && !x.asRoot {
			x.deviceFixup(hdr)
			return nil
		}
		mode := uint32(hdr.Mode & 0o7777)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknod(target, mode, int(dev)); err != nil {
			return fmt.Errorf("extract %s: %w", rel, err)
		}
		if err := x.setMeta(target, hdr, true); err != nil {
			return err
		}
	default:
		x.skip(hdr, "unsupported type")
		return nil
	}
	x.entries++
	return nil
}

func (x *extractor) file(target string, hdr *tar.Header, r io.Reader) error {
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	x.bytes += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return x.setMeta(target, hdr, true)
}

// hardlink links hdr's name to its target, which must already be
// extracted; final says the stream has ended, so a missing target is
// skipped rather than waited for.
func (x *extractor) hardlink(hdr *tar.Header, final bool) error {
	src := clean(hdr.Linkname)
	ok, err := x.parent(path.Dir(src), false)
	if err != nil {
		return err
	}
	if ok {
		if fi, err := os.Lstat(filepath.Join(x.root, src)); err == nil && !fi.IsDir() {
			if err := os.Link(filepath.Join(x.root, src), filepath.Join(x.root, hdr.Name)); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
			x.entries++
			return nil
		}
	}
	if !final {
		x.pending = append(x.pending, hdr)
		return x.hold(hdr)
	}
	x.skip(hdr, "hardlink target missing")
	return nil
}

// parent reports whether dir (relative) is a real directory, creating the
// missing components when create is set. A component that is a symlink or
// anything else but a directory makes it false.
func (x *extractor) parent(dir string, create bool) (bool, error) {
	if x.dirs[dir] {
		return true, nil
	}
	ok, err := x.parent(path.Dir(dir), create)
	if err != nil || !ok {
		return false, err
	}
	p := filepath.Join(x.root, dir)
	fi, err := os.Lstat(p)
	switch {
	case err == nil && fi.IsDir():
	case err == nil:
		return false, nil
	case errors.Is(err, fs.ErrNotExist) && create:
		// One deep name makes thousands of parents: they count as
		// entries, and their names are held in x.dirs.
		if x.entries >= x.limits.MaxEntries {
			return false, newError(ErrTooLarge, "", nil, "image layers expand past %d entries (at %q): refusing the image", x.limits.MaxEntries, dir)
		}
		if err := x.holdBytes(dir, int64(len(dir))); err != nil {
			return false, err
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			return false, fmt.Errorf("extract %s: %w", dir, err)
		}
		x.entries++
		if !x.asRoot {
			x.ownerFixup(&tar.Header{Name: dir})
		}
	default:
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("extract %s: %w", dir, err)
	}
	x.dirs[dir] = true
	return true, nil
}

// setMeta applies owner, mode (unless a symlink), xattrs and mtime.
func (x *extractor) setMeta(p string, hdr *tar.Header, chmod bool) error {
	if x.asRoot {
		if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("extract %s: %w", hdr.Name, err)
		}
	} else {
		x.ownerFixup(hdr)
	}
	if chmod {
		// After chown, which clears set-id bits.
		if err := unix.Fchmodat(unix.AT_FDCWD, p, uint32(hdr.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("extract %s: %w", hdr.Name, err)
		}
	}
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(p, attr, []byte(v), 0); err != nil && !x.asRoot {
			// Kept in a temp file until debugfs runs.
			if err := x.holdBytes(hdr.Name, int64(len(v))); err != nil {
				return err
			}
			x.xattrFixup(hdr, attr, v)
		} else if err != nil {
			x.log.Debug("image xattr not kept", "path", hdr.Name, "xattr", attr, "err", err)
		}
	}
	mtime := hdr.ModTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("extract %s: %w", hdr.Name, err)
	}
	return nil
}

func (x *extractor) skip(hdr *tar.Header, why string) {
	x.skipped++
	x.log.Debug("image entry skipped", "path", hdr.Name, "why", why)
}

// mountPoints are the directories podman mounts over in a container's
// root; they must exist on a read-only root.
var mountPoints = []struct {
	name string
	mode uint32
}{
	{"etc", 0o755}, {"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"tmp", 0o1777}, {"run", 0o755},
}

// addMountPoints creates the missing mount points. An existing entry of
// that name, even a symlink (var/run -> ../run style), is left alone.
func (x *extractor) addMountPoints() error {
	for _, m := range mountPoints {
		p := filepath.Join(x.root, m.name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		if err := os.Mkdir(p, 0); err != nil {
			return fmt.Errorf("create mount point /%s: %w", m.name, err)
		}
		if err := unix.Chmod(p, m.mode); err != nil {
			return fmt.Errorf("create mount point /%s: %w", m.name, err)
		}
		if !x.asRoot {
			x.ownerFixup(&tar.Header{Name: m.name})
		}
	}
	return nil
}
