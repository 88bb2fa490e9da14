package snapshot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// commit makes a snapshot tag in a fresh store: a small state file, a
// "memory" file big enough to be sampled, and the artifacts it names.
func commit(t testing.TB) (*Store, string) {
	t.Helper()
	root := t.TempDir()
	s := &Store{Dir: filepath.Join(root, "snapshots")}
	art := filepath.Join(root, "artifact")
	if err := os.WriteFile(art, []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	staging, err := s.Staging("warm")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staging, "vmstate"), []byte("device state"), 0o644); err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, sampleOver+3<<20)
	for i := range mem {
		mem[i] = byte(i / 4096)
	}
	if err := os.WriteFile(filepath.Join(staging, MemFile), mem, 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Tag: "warm", Driver: "qemu", Kernel: art, Rootfs: art, ImageDisk: art}
	if err := s.Commit(staging, m); err != nil {
		t.Fatal(err)
	}
	return s, "warm"
}

func TestLoadUnchanged(t *testing.T) {
	s, tag := commit(t)
	m, err := s.Load(tag)
	if err != nil {
		t.Fatal(err)
	}
	for n, d := range m.Files {
		if d.Stamp == nil {
			t.Errorf("%s: no stamp in the manifest", n)
		}
	}
	if !m.Files[MemFile].Sampled || m.Files["vmstate"].Sampled {
		t.Errorf("sampling: mem %v, vmstate %v; want only the big file sampled", m.Files[MemFile].Sampled, m.Files["vmstate"].Sampled)
	}
}

// overwrite replaces n bytes at off of a snapshot file in place, keeping
// its size and inode.
func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestLoadCatchesChanges(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		change     func(t *testing.T, dir string)
	}{
		{"small file rewritten in place", "vmstate does not match", func(t *testing.T, dir string) {
			overwrite(t, filepath.Join(dir, "vmstate"), 0, []byte("DEVICE"))
		}},
		{"big file's first MiB rewritten", MemFile + " does not match", func(t *testing.T, dir string) {
			overwrite(t, filepath.Join(dir, MemFile), 4096, []byte("changed"))
		}},
		{"big file truncated", "bytes, the snapshot wrote", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, MemFile), 1<<20); err != nil {
				t.Fatal(err)
			}
		}},
		{"file swapped for another of the same size", "vmstate does not match", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "vmstate")
			os.Remove(p)
			if err := os.WriteFile(p, []byte("DEVICE STATE"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"file gone", "no such file", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "vmstate"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, tag := commit(t)
			tc.change(t, s.Path(tag))
			_, err := s.Load(tag)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v; want ErrCorrupt saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "fcvm snapshot rm -f "+tag) {
				t.Errorf("error %q does not say how to remove the snapshot", err)
			}
		})
	}
}

// A snapshot copied elsewhere (a backup restored) has new inodes: its
// files are hashed again and accepted when their content is the same.
func TestLoadCopiedSnapshot(t *testing.T) {
	s, tag := commit(t)
	dir := s.Path(tag)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Load(tag); err != nil {
		t.Fatalf("Load of a byte-identical copy: %v", err)
	}
}

func TestLoadBadInput(t *testing.T) {
	s, tag := commit(t)
	if _, err := s.Load("no-such"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load of a missing tag: %v, want ErrNotFound", err)
	}
	if _, err := s.Load("../etc"); err == nil {
		t.Error("Load of an invalid tag succeeded")
	}
	if err := os.WriteFile(filepath.Join(s.Path(tag), ManifestFile), []byte(`{"version": 99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(tag); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("Load of a future manifest: %v, want ErrCorrupt naming the version", err)
	}
}

func BenchmarkLoad(b *testing.B) {
	s, tag := commit(b)
	for b.Loop() {
		if _, err := s.Load(tag); err != nil {
			b.Fatal(err)
		}
	}
}
