package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/flock"
)

// Clone makes dst a copy-on-write copy of src: a reflink when the
// filesystem can, else a sparse copy that writes only src's data extents.
// dst must not exist; on error nothing is left at dst.
func Clone(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return nil
	}
	return sparseCopy(in, out)
}

// Reflink reports whether dir's filesystem supports FICLONE.
func Reflink(dir string) bool {
	a, err := os.CreateTemp(dir, ".reflink-probe-")
	if err != nil {
		return false
	}
	defer os.Remove(a.Name())
	defer a.Close()
	a.Write([]byte("x"))
	b, err := os.CreateTemp(dir, ".reflink-probe-")
	if err != nil {
		return false
	}
	defer os.Remove(b.Name())
	defer b.Close()
	return unix.IoctlFileClone(int(b.Fd()), int(a.Fd())) == nil
}

func sparseCopy(in, out *os.File) error {
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	return copyData(in, out, st.Size())
}

// FillSlot writes the disk image src at the start of slot, the backing
// file of a disk a running VM has attached (a pod VM's spare disk):
// slot's size, which is the disk's, does not change, and what the
// previous image wrote there reads as zeros. src must fit.
func FillSlot(slot, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(slot, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	si, err := in.Stat()
	if err != nil {
		return err
	}
	so, err := out.Stat()
	if err != nil {
		return err
	}
	if si.Size() > so.Size() {
		return fmt.Errorf("fill slot disk %s: the image is %d MiB, the slot %d MiB", slot, si.Size()>>20, so.Size()>>20)
	}
	if err := unix.Fallocate(int(out.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, so.Size()); err != nil {
		return fmt.Errorf("fill slot disk %s: drop the previous image: %w", slot, err)
	}
	// copy_file_range shares the extents where the filesystem can
	// (btrfs, xfs): no copy then.
	if err := copyData(in, out, si.Size()); err != nil {
		return fmt.Errorf("fill slot disk %s: %w", slot, err)
	}
	return out.Sync()
}

// copyData copies in's data extents (the first size bytes) to the same
// offsets of out, leaving its holes alone.
func copyData(in, out *os.File, size int64) error {
	fdIn := int(in.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(fdIn, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fdIn, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off, in the kernel where it can.
func copyRange(in, out *os.File, off, n int64) error {
	for n > 0 {
		offIn, offOut := off, off
		c, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, int(n), 0)
		if err != nil || c == 0 {
			// Fall back to a user-space copy (cross-device, old kernels).
			_, err := io.Copy(io.NewOffsetWriter(out, off), io.NewSectionReader(in, off, n))
			return err
		}
		off += int64(c)
		n -= int64(c)
	}
	return nil
}

func lock(path string) (func(), error) {
	l, err := flock.Acquire(context.Background(), path, nil)
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}
