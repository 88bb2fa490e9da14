// Package snapshot stores snapshots of running VMs: a directory per tag
// under the data dir holding the VM's device state, its memory, its
// writable disk, and a manifest that names every artifact by digest.
//
// # Layout
//
//	snapshots/<tag>/manifest.json   versioned; see Manifest
//	snapshots/<tag>/vmstate         device state (tiny for QEMU with x-ignore-shared)
//	snapshots/<tag>/mem.ram         guest RAM, mapped privately by every clone (QEMU)
//	snapshots/<tag>/memory          guest RAM as Firecracker writes it (see Manifest.Memory)
//	snapshots/<tag>/upper.ext4      the VM's writable disk, copied on write for each clone
//
// # Integrity
//
// A clone must boot against exactly the artifacts the snapshot was taken
// with: the base rootfs and the image disk are shared read-only files the
// guest's page cache already holds pieces of. The manifest records their
// digests (the content-addressed names of artifacts and images) and Load
// refuses a snapshot whose version is unknown or whose files do not match.
// Small files are hashed in full; the memory and disk files, hundreds of
// MiB, are checked by size and a digest of their first and last MiB, so a
// truncated or swapped file is caught. The manifest also keeps each file's
// inode stamp (inode number, mtime, ctime): while a file's stamp matches,
// it is unchanged since it was hashed and Load reads only its inode, so a
// clone's checks take microseconds; a file with another stamp is hashed.
//
// # Concurrency
//
// A snapshot is written into a temp dir and renamed into place, so a tag
// either exists whole or not at all; creating a tag that exists fails.
package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"github.com/fcvm/fcvm/internal/atomicfile"
	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/state"
)

// Version is the manifest format this fcvm writes and reads.
const Version = 1

// File names in a snapshot dir.
const (
	ManifestFile = "manifest.json"
	MemFile      = "mem.ram"
	DiskFile     = "upper.ext4"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("snapshot: not found")
	ErrExists   = errors.New("snapshot: tag in use")
	ErrCorrupt  = errors.New("snapshot: corrupt")
)

// Manifest describes one snapshot.
type Manifest struct {
	Version   int       `json:"version"`
	Tag       string    `json:"tag"`
	Created   time.Time `json:"created"`
	Driver    string    `json:"driver"`
	SourceVM  string    `json:"source_vm"`
	Image     string    `json:"image"`
	ImageID   string    `json:"image_id"`
	ImageDisk string    `json:"image_disk"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	// Kernel, Initrd and Rootfs are the artifact paths the VM booted
	// from, whose directory names are their content digests.
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
	Rootfs string `json:"rootfs"`
	// Generation is the channel generation the snapshotted guest last saw.
	Generation uint64 `json:"generation"`
	// Network is the guest's network identity, kept by every clone.
	Network state.Network  `json:"network"`
	Ports   []state.Port   `json:"ports,omitempty"`
	Volumes []state.Volume `json:"volumes,omitempty"`
	Plan    *channel.Plan  `json:"plan"`
	// MemFile names the guest memory file in the dir: each driver writes
	// its own (MemFile for QEMU, "memory" for Firecracker). Empty, in
	// manifests written before the field existed, means MemFile.
	MemFile string `json:"mem_file,omitempty"`
	// Files maps each artifact in the dir to its digest.
	Files map[string]FileDigest `json:"files"`
}

// Memory is the name of the guest memory file in the snapshot's dir.
func (m *Manifest) Memory() string {
	if m.MemFile == "" {
		return MemFile
	}
	return m.MemFile
}

// FileDigest identifies a file's content.
type FileDigest struct {
	Size int64 `json:"size"`
	// SHA256 is of the whole file, or, when Sampled, of its size, first
	// MiB and last MiB.
	SHA256  string `json:"sha256"`
	Sampled bool   `json:"sampled,omitempty"`
	// Stamp is the file's inode as it was when SHA256 was taken. A file
	// whose inode still matches has not been written, truncated or
	// replaced since, so Load trusts SHA256 without reading the file; a
	// file that was copied or restored from a backup gets a new inode
	// and is hashed again.
	Stamp *Stamp `json:"stamp,omitempty"`
}

// Stamp is what changes when a file does (see FileDigest.Stamp).
type Stamp struct {
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	MtimeNS int64  `json:"mtime_ns"`
	CtimeNS int64  `json:"ctime_ns"`
}

// verify checks the file at path against d: by its stamp when that still
// matches, else by hashing it again.
func (d FileDigest) verify(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Size() != d.Size {
		return fmt.Errorf("%s is %d bytes, the snapshot wrote %d", filepath.Base(path), fi.Size(), d.Size)
	}
	if s := stampOf(fi); s != nil && d.Stamp != nil && *s == *d.Stamp {
		return nil
	}
	got, err := Digest(path)
	if err != nil {
		return err
	}
	if got.SHA256 != d.SHA256 || got.Sampled != d.Sampled {
		return fmt.Errorf("%s does not match its digest", filepath.Base(path))
	}
	return nil
}

// sampleOver is the size above which a file's digest is sampled.
const sampleOver = 8 << 20

// Digest computes a file's FileDigest.
func Digest(path string) (FileDigest, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileDigest{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return FileDigest{}, err
	}
	h := sha256.New()
	d := FileDigest{Size: st.Size(), Stamp: stampOf(st)}
	if st.Size() <= sampleOver {
		if _, err := io.Copy(h, f); err != nil {
			return FileDigest{}, err
		}
	} else {
		d.Sampled = true
		fmt.Fprintf(h, "%d\n", st.Size())
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<20)); err != nil {
			return FileDigest{}, err
		}
		if _, err := io.Copy(h, io.NewSectionReader(f, st.Size()-1<<20, 1<<20)); err != nil {
			return FileDigest{}, err
		}
	}
	d.SHA256 = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

var tagRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ValidTag reports whether tag can name a snapshot.
func ValidTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return fmt.Errorf("tag %q: use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit", tag)
	}
	return nil
}

// Store is the snapshots dir.
type Store struct{ Dir string }

// Path is the directory of tag.
func (s *Store) Path(tag string) string { return filepath.Join(s.Dir, tag) }

// Load reads and verifies tag's manifest and files.
func (s *Store) Load(tag string) (*Manifest, error) {
	if err := ValidTag(tag); err != nil {
		return nil, err
	}
	dir := s.Path(tag)
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (list them with fcvm snapshot ls)", ErrNotFound, tag)
	}
	if err != nil {
		return nil, fmt.Errorf("read snapshot %s: %w", tag, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: manifest: %v (remove it with fcvm snapshot rm -f %s)", ErrCorrupt, tag, err, tag)
	}
	if m.Version != Version {
		return nil, fmt.Errorf("%w: %s: manifest version %d, this fcvm reads %d: take the snapshot again", ErrCorrupt, tag, m.Version, Version)
	}
	names := make([]string, 0, len(m.Files))
	for n := range m.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := m.Files[n].verify(filepath.Join(dir, n)); err != nil {
			return nil, fmt.Errorf("%w: %s: %v (remove it with fcvm snapshot rm -f %s)", ErrCorrupt, tag, err, tag)
		}
	}
	for _, p := range []string{m.Rootfs, m.Kernel, m.ImageDisk} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w: %s: it needs %s, which is gone", ErrCorrupt, tag, p)
		}
	}
	return &m, nil
}

// List returns every readable snapshot, sorted by tag, without verifying
// file digests.
func (s *Store) List() ([]*Manifest, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Manifest
	for _, e := range ents {
		if !e.IsDir() || ValidTag(e.Name()) != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.Dir, e.Name(), ManifestFile))
		if err != nil {
			continue
		}
		var m Manifest
		if json.Unmarshal(b, &m) == nil {
			out = append(out, &m)
		}
	}
	return out, nil
}

// Staging returns a fresh temp dir for building tag, failing if tag exists.
func (s *Store) Staging(tag string) (string, error) {
	if err := ValidTag(tag); err != nil {
		return "", err
	}
	if _, err := os.Stat(s.Path(tag)); err == nil {
		return "", fmt.Errorf("%w: %s: choose another --tag or remove it with fcvm snapshot rm %s", ErrExists, tag, tag)
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(s.Dir, ".tmp-"+tag+"-")
}

// Commit writes m into staging and renames it to its tag.
func (s *Store) Commit(staging string, m *Manifest) error {
	m.Version = Version
	m.Files = map[string]FileDigest{}
	ents, err := os.ReadDir(staging)
	if err != nil {
		return err
	}
	for _, e := range ents {
		d, err := Digest(filepath.Join(staging, e.Name()))
		if err != nil {
			return fmt.Errorf("digest %s: %w", e.Name(), err)
		}
		m.Files[e.Name()] = d
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(staging, ManifestFile), b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(staging, s.Path(m.Tag)); err != nil {
		if errors.Is(err, os.ErrExist) || errors.Is(err, errors.ErrUnsupported) {
			return fmt.Errorf("%w: %s", ErrExists, m.Tag)
		}
		return fmt.Errorf("commit snapshot %s: %w", m.Tag, err)
	}
	return atomicfile.SyncDir(s.Dir)
}

// Remove deletes tag.
func (s *Store) Remove(tag string) error {
	if err := ValidTag(tag); err != nil {
		return err
	}
	if _, err := os.Stat(s.Path(tag)); err != nil {
		return fmt.Errorf("%w: %s", ErrNotFound, tag)
	}
	trash := filepath.Join(s.Dir, fmt.Sprintf(".trash-%s-%d", tag, time.Now().UnixNano()))
	if err := os.Rename(s.Path(tag), trash); err != nil {
		return err
	}
	return os.RemoveAll(trash)
}
