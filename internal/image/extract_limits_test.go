package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// paxRecord encodes one PAX record, whose length counts its own digits.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	l := len(strconv.Itoa(n))
	if len(strconv.Itoa(n+l)) > l {
		l++
	}
	return fmt.Sprintf("%d %s=%s\n", n+l, k, v)
}

// sparseBomb is a tar of a few KiB holding one GNU 1.0 sparse file that
// claims realSize bytes, all holes but its last byte. archive/tar writes
// no sparse files, so the PAX header is written as a regular entry and
// then retyped.
func sparseBomb(t *testing.T, realSize int64) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", "big") + paxRecord("GNU.sparse.realsize", strconv.FormatInt(realSize, 10))
	if err := tw.WriteHeader(&tar.Header{Name: "PaxHeaders/big", Typeflag: tar.TypeReg, Size: int64(len(recs)), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(recs))
	tw.Flush()
	hdr := b.Bytes()[:512]
	hdr[156] = tar.TypeXHeader
	copy(hdr[148:156], "        ")
	sum := 0
	for _, c := range hdr {
		sum += int(c)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	data := make([]byte, 512)
	copy(data, fmt.Sprintf("1\n%d\n1\n", realSize-1))
	data = append(data, 'x')
	if err := tw.WriteHeader(&tar.Header{Name: "GNUSparseFile.0/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	// The stream must read as the sparse file it claims to be.
	got, err := tar.NewReader(bytes.NewReader(b.Bytes())).Next()
	if err != nil || got.Name != "big" || got.Size != realSize {
		t.Fatalf("crafted sparse entry reads as %+v, %v", got, err)
	}
	return b.Bytes()
}

// usage is the size of the regular files under root, and how many
// entries it holds.
func usage(t *testing.T, root string) (size int64, files int) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return nil
		}
		files++
		if fi, err := d.Info(); err == nil && d.Type().IsRegular() {
			size += fi.Size()
		}
		return nil
	})
	return size, files
}

func extractWith(t *testing.T, data []byte, limits Limits) (string, error) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	x := newExtractor(root, slog.New(slog.DiscardHandler), limits)
	return root, x.extract(context.Background(), bytes.NewReader(data), nil)
}

func wantTooLarge(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("extract = %v, want ErrTooLarge", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, want) || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line starting %q", msg, want)
	}
}

// TestExtractRefusesSparseBomb extracts a 3 KiB layer whose one file
// claims 1 TiB in holes, under the default limits: it is refused at once,
// before a byte of it is written.
func TestExtractRefusesSparseBomb(t *testing.T) {
	data := sparseBomb(t, 1<<40)
	start := time.Now()
	root, err := extractWith(t, data, Limits{})
	wantTooLarge(t, err, "image layers expand past 64 GiB (entry \"big\" claims 1.1 TB, holes included)")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusing a %d-byte layer took %s", len(data), d)
	}
	if size, files := usage(t, root); size > 0 || files > 0 {
		t.Errorf("%d files of %d bytes written before the refusal", files, size)
	}
}

// TestExtractCountsEverySize spreads the excess over many small files,
// and over an entry the extractor skips: the sum is what counts.
func TestExtractCountsEverySize(t *testing.T) {
	var hdrs []*tar.Header
	for i := range 40 {
		hdrs = append(hdrs, &tar.Header{Name: fmt.Sprintf("f%02d", i), Typeflag: tar.TypeReg, Mode: 0o644})
	}
	data := tarOf(t, hdrs...) // each file holds its own name: 3 bytes
	if _, err := extractWith(t, data, Limits{MaxBytes: 40 * 6}); err != nil {
		t.Fatalf("extract within the limit: %v", err)
	}
	root, err := extractWith(t, data, Limits{MaxBytes: 40*6 - 1})
	wantTooLarge(t, err, "image layers expand past 239 B (entry \"f39\" claims 3 B")
	if _, files := usage(t, root); files != 39 {
		t.Errorf("%d files written, want the 39 within the limit", files)
	}
}

// TestExtractRefusesHugeHeader gives an entry a size of 2^62 and no data:
// refused from the header alone.
func TestExtractRefusesHugeHeader(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "etc/huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 62})
	tw.Flush()
	root, err := extractWith(t, b.Bytes(), Limits{})
	wantTooLarge(t, err, "image layers expand past 64 GiB (entry \"etc/huge\"")
	if _, files := usage(t, root); files > 0 {
		t.Errorf("%d files written", files)
	}
}

// TestExtractIgnoresSizeOfHeaderOnlyEntries gives a hardlink and a
// directory a huge Size: archive/tar reads no content for them and
// nothing is written, so they are not refused.
func TestExtractIgnoresSizeOfHeaderOnlyEntries(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, Size: 1 << 40})
	tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "f", Size: 1 << 40})
	tw.Close()
	if _, err := extractWith(t, b.Bytes(), Limits{MaxBytes: 1 << 20}); err != nil {
		t.Fatalf("extract: %v", err)
	}
}

// TestExtractRefusesManyEntries feeds more empty entries than allowed,
// and then one entry whose deep name would make thousands of parents.
func TestExtractRefusesManyEntries(t *testing.T) {
	var hdrs []*tar.Header
	for i := range 5000 {
		hdrs = append(hdrs, &tar.Header{Name: fmt.Sprintf("d/%d", i), Typeflag: tar.TypeDir, Mode: 0o755})
	}
	root, err := extractWith(t, tarOf(t, hdrs...), Limits{MaxEntries: 1000})
	wantTooLarge(t, err, "image layers expand past 1000 entries (at \"d/999\")")
	if _, files := usage(t, root); files > 1000 {
		t.Errorf("%d entries made, limit 1000", files)
	}

	deep := strings.Repeat("a/", 1500) + "f"
	root, err = extractWith(t, tarOf(t, &tar.Header{Name: deep, Typeflag: tar.TypeReg, Mode: 0o644}), Limits{MaxEntries: 100})
	wantTooLarge(t, err, "image layers expand past 100 entries")
	if _, files := usage(t, root); files > 100 {
		t.Errorf("%d parent directories made, limit 100", files)
	}
}
