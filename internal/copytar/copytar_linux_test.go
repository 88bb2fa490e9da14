package copytar

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostileTar builds a stream entry by entry.
func hostileTar(t *testing.T, entries ...*tar.Header) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(h.Name))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(h.Name)[:h.Size])
		}
	}
	tw.Close()
	return &b
}

func openDir(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestExtractStaysBeneath: names with "..", absolute names, and symlinks
// the stream makes (to outside, absolute and relative) never let an entry
// be written outside the destination.
func TestExtractStaysBeneath(t *testing.T) {
	outside := t.TempDir()
	for _, c := range []struct {
		name    string
		entries []*tar.Header
	}{
		{"dotdot name", []*tar.Header{{Name: "../../" + filepath.Base(outside) + "/pwned", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"symlink dir to outside", []*tar.Header{
			{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "link/pwned", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"relative symlink up", []*tar.Header{
			{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../../" + outside},
			{Name: "up/pwned", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"symlink then file of the same name", []*tar.Header{
			{Name: "pwned", Typeflag: tar.TypeSymlink, Linkname: filepath.Join(outside, "pwned")},
			{Name: "pwned", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"hardlink to outside", []*tar.Header{
			{Name: "up", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "pwned", Typeflag: tar.TypeLink, Linkname: "up/victim"},
		}},
		{"entry beside the one top-level name", []*tar.Header{
			{Name: "../" + filepath.Base(outside) + "/pwned", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"proc magic link", []*tar.Header{
			{Name: "p", Typeflag: tar.TypeSymlink, Linkname: "/proc/self/root" + outside},
			{Name: "p/pwned", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			os.WriteFile(filepath.Join(outside, "victim"), []byte("victim"), 0o644)
			dest := t.TempDir()
			err := Extract(hostileTar(t, c.entries...), openDir(t, dest), ExtractOptions{})
			if _, serr := os.Lstat(filepath.Join(outside, "pwned")); serr == nil {
				t.Fatalf("an entry was written outside the destination (err %v)", err)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "victim" {
				t.Fatalf("victim changed: %q", b)
			}
			t.Logf("extract: %v", err)
		})
	}
}

func TestExtractSkipsDevicesAndBounds(t *testing.T) {
	dest := t.TempDir()
	var skipped []string
	err := Extract(hostileTar(t,
		&tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666},
		&tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o666},
		&tar.Header{Name: "ok", Typeflag: tar.TypeReg, Mode: 0o4755},
	), openDir(t, dest), ExtractOptions{Skipped: func(n, why string) { skipped = append(skipped, n) }})
	if err != nil || len(skipped) != 2 {
		t.Fatalf("extract: %v, skipped %v", err, skipped)
	}
	if st, err := os.Stat(filepath.Join(dest, "ok")); err != nil || st.Mode().Perm() != 0o755 || st.Mode()&os.ModeSetuid != 0 {
		t.Errorf("ok: %v %v: want 0755 without setuid", st.Mode(), err)
	}
	for _, c := range []struct {
		limits  Limits
		entries []*tar.Header
	}{
		{Limits{MaxEntries: 2}, []*tar.Header{{Name: "a/", Typeflag: tar.TypeDir}, {Name: "b/", Typeflag: tar.TypeDir}, {Name: "c/", Typeflag: tar.TypeDir}}},
		{Limits{MaxBytes: 10}, []*tar.Header{{Name: "0123456789ab", Typeflag: tar.TypeReg}}},
	} {
		err := Extract(hostileTar(t, c.entries...), openDir(t, t.TempDir()), ExtractOptions{Limits: c.limits})
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("limits %+v: %v, want ErrTooLarge", c.limits, err)
		}
	}
}

// TestRoundTrip: Write then Extract keeps contents, modes, symlinks and
// times, under a new top-level name.
func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "tree/sub"), 0o750)
	os.WriteFile(filepath.Join(src, "tree/sub/x"), []byte("x data"), 0o640)
	os.WriteFile(filepath.Join(src, "tree/run.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("sub/x", filepath.Join(src, "tree/link"))
	unix.Mkfifo(filepath.Join(src, "tree/fifo"), 0o600)
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(src, "tree/sub/x"), old, old)
	os.Chtimes(filepath.Join(src, "tree/sub"), old, old)

	var b bytes.Buffer
	var skipped []string
	if err := Write(&b, openDir(t, src), "tree", "tree", func(n, _ string) { skipped = append(skipped, n) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(skipped, ",") != "tree/fifo" {
		t.Errorf("skipped %v, want the fifo", skipped)
	}
	dest := t.TempDir()
	if err := Extract(&b, openDir(t, dest), ExtractOptions{Top: "tree", RenameTo: "copy"}); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{"copy": 0o750 | os.ModeDir, "copy/sub": 0o750 | os.ModeDir, "copy/sub/x": 0o640, "copy/run.sh": 0o755} {
		st, err := os.Lstat(filepath.Join(dest, p))
		if err != nil || st.Mode() != mode {
			t.Errorf("%s: %v %v, want %v", p, st.Mode(), err, mode)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "copy/sub/x")); string(b) != "x data" {
		t.Errorf("content: %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(dest, "copy/link")); l != "sub/x" {
		t.Errorf("link: %q", l)
	}
	for _, p := range []string{"copy/sub/x", "copy/sub"} {
		if st, _ := os.Stat(filepath.Join(dest, p)); !st.ModTime().Equal(old) {
			t.Errorf("%s mtime %v, want %v", p, st.ModTime(), old)
		}
	}
}
