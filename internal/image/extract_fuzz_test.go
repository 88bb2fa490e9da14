package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func tarOf(t testing.TB, hdrs ...*tar.Header) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(h.Name))
		}
	}
	tw.Close()
	return b.Bytes()
}

// FuzzExtract feeds arbitrary tar streams to the extractor and checks that
// nothing appears outside its root, whatever the names and links say.
func FuzzExtract(f *testing.F) {
	for _, seed := range [][]*tar.Header{
		{{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "../outside"}, {Name: "a/x", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "../outside/y", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, {Name: "h", Typeflag: tar.TypeLink, Linkname: "l/etc/passwd"}},
		{{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o4755}, {Name: "d/g", Typeflag: tar.TypeLink, Linkname: "d/f"}},
		{{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o600}, {Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}},
	} {
		f.Add(tarOf(f, seed...))
	}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Big (or sparse: holes read as zeros) files only cost disk here.
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			if hdr.Size > 1<<20 {
				t.Skip("file too big for fuzzing")
			}
		}
		// On tmpfs: on this disk every rmdir waits for a discard.
		base, err := os.MkdirTemp(fuzzTmp(), "fcvm-fuzz-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(base)
		root := filepath.Join(base, "root")
		outside := filepath.Join(base, "outside")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		x := newExtractor(root, log, Limits{MaxBytes: 64 << 20, MaxEntries: 1 << 16})
		_ = x.extract(context.Background(), bytes.NewReader(data), nil)
		ents, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 2 {
			t.Fatalf("extractor wrote beside its root: %v", ents)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Fatalf("extractor wrote outside its root: %v", ents)
		}
		// Nothing in the tree may be a hardlink to a file outside it.
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := os.Stat(p); err == nil && fi.Sys() != nil {
					if os.SameFile(fi, mustStat(t, "/etc/passwd")) {
						t.Fatalf("%s is a hardlink to /etc/passwd", p)
					}
				}
			}
			return nil
		})
	})
}

func mustStat(t *testing.T, p string) os.FileInfo {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func fuzzTmp() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}
