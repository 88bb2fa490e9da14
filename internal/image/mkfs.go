package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

const blockSize = 4096

// fsUsage is what a tree needs on ext4 with 4 KiB blocks.
type fsUsage struct {
	blocks int64 // data blocks
	inodes int64
}

// measure walks root and counts the blocks and inodes mkfs.ext4 -d will use.
func measure(root string) (fsUsage, error) {
	var u fsUsage
	dirEntries := map[string]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		u.inodes++
		dirEntries[filepath.Dir(p)] += int64(len(d.Name())) + 16
		switch {
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			u.blocks += (fi.Size() + blockSize - 1) / blockSize
		case d.Type()&fs.ModeSymlink != 0:
			if t, err := os.Readlink(p); err == nil && len(t) >= 60 {
				u.blocks++ // longer targets do not fit in the inode
			}
		}
		return nil
	})
	for _, n := range dirEntries {
		u.blocks += 1 + n/blockSize
	}
	return u, err
}

// diskSize is the ext4 image size for u: the data plus metadata (inode
// tables at 256 bytes an inode, bitmaps, group descriptors, extent blocks of
// fragmented files) plus slack, rounded up to a MiB. The disk is read-only,
// so it needs no free space of its own.
func diskSize(u fsUsage, attempt int) int64 {
	data := u.blocks * blockSize
	size := data + data/16 + u.inodes*256 + 4<<20
	for range attempt {
		size += size / 2
	}
	const mib = 1 << 20
	return (size + mib - 1) / mib * mib
}

// mkfs builds an ext4 image of root at disk, retrying with more room when
// the estimate was short.
func mkfs(ctx context.Context, root, disk, label string) (int64, error) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return 0, fmt.Errorf("mkfs.ext4 not found: install it (apt-get install e2fsprogs)")
	}
	u, err := measure(root)
	if err != nil {
		return 0, fmt.Errorf("measure image tree: %w", err)
	}
	for attempt := 0; ; attempt++ {
		size := diskSize(u, attempt)
		err := mkfsOnce(ctx, root, disk, label, size, u.inodes+u.inodes/10+64)
		if err == nil {
			return size, nil
		}
		if attempt == 3 || !errors.Is(err, errNoSpace) {
			return 0, err
		}
	}
}

var errNoSpace = errors.New("image: ext4 image too small")

func mkfsOnce(ctx context.Context, root, disk, label string, size, inodes int64) error {
	os.Remove(disk)
	f, err := os.OpenFile(disk, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create disk: %w", err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return fmt.Errorf("create disk %s: %w", disk, err)
	}
	cmd := exec.CommandContext(ctx, "mkfs.ext4",
		"-F", "-q",
		"-b", strconv.Itoa(blockSize),
		"-I", "256",
		"-N", strconv.FormatInt(inodes, 10),
		"-m", "0",
		"-O", "^has_journal,^resize_inode",
		"-E", "root_owner=0:0,lazy_itable_init=0,nodiscard",
		"-L", label,
		"-d", root,
		disk)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if strings.Contains(msg, "No space left") || strings.Contains(msg, "Could not allocate") ||
			strings.Contains(msg, "no free space") || strings.Contains(msg, "inodes") {
			return fmt.Errorf("%w: %s", errNoSpace, msg)
		}
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", disk, err, msg)
	}
	return nil
}
