package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCloneSparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.WriteAt(bytes.Repeat([]byte("a"), 4096), 0)
	f.WriteAt(bytes.Repeat([]byte("b"), 8192), 32<<20)
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := Clone(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("clone differs from source")
	}
	var st unix.Stat_t
	unix.Stat(dst, &st)
	if st.Blocks*512 > 1<<20 {
		t.Fatalf("clone uses %d bytes: not sparse", st.Blocks*512)
	}
	if err := Clone(src, dst); err == nil {
		t.Fatal("clone over an existing file succeeded")
	}
}

func TestUpperDisk(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	for i := 0; i < 2; i++ {
		dst := filepath.Join(t.TempDir(), "upper.ext4")
		if err := s.UpperDisk(context.Background(), dst, 256); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 2)
		f, _ := os.Open(dst)
		f.ReadAt(b, 1024+56) // ext4 superblock magic
		f.Close()
		if b[0] != 0x53 || b[1] != 0xef {
			t.Fatalf("no ext4 magic in upper disk: %x", b)
		}
	}
}

func BenchmarkUpperDisk(b *testing.B) {
	s := &Store{Dir: b.TempDir()}
	dir := b.TempDir()
	s.UpperDisk(context.Background(), filepath.Join(dir, "warm"), 2048)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := filepath.Join(dir, "d")
		if err := s.UpperDisk(context.Background(), dst, 2048); err != nil {
			b.Fatal(err)
		}
		os.Remove(dst)
	}
}

// TestFillSlot: the image lands at the slot's start, the previous image's
// bytes beyond it read as zeros, the slot keeps its size, and an image
// larger than the slot is refused.
func TestFillSlot(t *testing.T) {
	dir := t.TempDir()
	slot, src, big := filepath.Join(dir, "slot"), filepath.Join(dir, "img"), filepath.Join(dir, "big")
	old := bytes.Repeat([]byte{0xAA}, 1<<20)
	if err := os.WriteFile(slot, old, 0o644); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 100<<10)
	rand.Read(img)
	os.WriteFile(src, img, 0o644)
	os.WriteFile(big, make([]byte, 2<<20), 0o644)
	if err := FillSlot(slot, src); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(slot)
	if len(got) != len(old) || !bytes.Equal(got[:len(img)], img) || !bytes.Equal(got[len(img):], make([]byte, len(old)-len(img))) {
		t.Errorf("slot after fill: %d bytes, image there %v, rest zero %v", len(got), bytes.Equal(got[:len(img)], img), bytes.Equal(got[len(img):], make([]byte, len(old)-len(img))))
	}
	if err := FillSlot(slot, big); err == nil || !strings.Contains(err.Error(), "the image is 2 MiB, the slot 1 MiB") {
		t.Errorf("image larger than the slot: %v", err)
	}
}

// TestFillSlotReflinks: on a filesystem that can (btrfs), the slot shares
// the image's extents instead of holding a copy (copy_file_range reflinks
// there).
func TestFillSlotReflinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestFillSlotReflinks needs root (a loop mount)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "btrfs.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(256 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs (apt-get install btrfs-progs): %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	slot, src := filepath.Join(mnt, "slot"), filepath.Join(mnt, "img")
	s, _ := os.Create(slot)
	s.Truncate(64 << 20)
	s.Close()
	data := make([]byte, 8<<20) // a whole number of blocks, as mkfs makes images
	rand.Read(data)
	os.WriteFile(src, data, 0o644)
	if err := FillSlot(slot, src); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(slot)
	if len(got) != 64<<20 || !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, len(got)-len(data))) {
		t.Fatalf("slot after fill: %d bytes, image there %v", len(got), bytes.Equal(got[:len(data)], data))
	}
	out, err := exec.Command("filefrag", "-v", slot).CombinedOutput()
	if err != nil {
		t.Fatalf("filefrag: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "shared") {
		t.Errorf("the slot's extents are not shared with the image (a copy, not a reflink):\n%s", out)
	}
}
