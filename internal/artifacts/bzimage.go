package artifacts

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz/lzma"
)

// Offsets in the x86 boot protocol's setup header
// (Documentation/arch/x86/boot.rst).
const (
	hdrSetupSects    = 0x1f1
	hdrMagic         = 0x202 // "HdrS"
	hdrVersion       = 0x206
	hdrKernelVersion = 0x20e
	hdrPayloadOffset = 0x248
	hdrPayloadLength = 0x24c
	hdrEnd           = 0x250
)

var elfMagic = []byte("\x7fELF")

// maxVmlinux bounds decompression so a corrupt or hostile payload cannot
// fill the disk.
const maxVmlinux = 1 << 30

// ErrNotKernel says a file is neither an ELF vmlinux nor an x86 bzImage.
var ErrNotKernel = errors.New("artifacts: not an ELF vmlinux or x86 bzImage")

// isELF reports whether b starts like an ELF file.
func isELF(b []byte) bool { return bytes.HasPrefix(b, elfMagic) }

// isBzImage reports whether b carries an x86 setup header with a payload
// (boot protocol 2.08 or later).
func isBzImage(b []byte) bool {
	return len(b) > hdrEnd && string(b[hdrMagic:hdrMagic+4]) == "HdrS" &&
		binary.LittleEndian.Uint16(b[hdrVersion:]) >= 0x208
}

// ExtractVmlinux returns the uncompressed ELF vmlinux inside an x86
// bzImage. The payload's compression is found by its magic; the kernel's
// build appends the uncompressed size as a little-endian uint32 to every
// format, which is checked against what came out.
func ExtractVmlinux(bz []byte) ([]byte, error) {
	if !isBzImage(bz) {
		return nil, ErrNotKernel
	}
	setupSects := int(bz[hdrSetupSects])
	if setupSects == 0 {
		setupSects = 4 // the boot protocol's historical default
	}
	start := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(bz[hdrPayloadOffset:]))
	n := int(binary.LittleEndian.Uint32(bz[hdrPayloadLength:]))
	if start < 0 || n < 8 || start+n > len(bz) {
		return nil, fmt.Errorf("bzImage payload [%d,+%d) outside the %d-byte file: %w", start, n, len(bz), ErrNotKernel)
	}
	payload := bz[start : start+n-4]
	want := binary.LittleEndian.Uint32(bz[start+n-4:])
	// Kernels compress about 8 to 1; a header claiming far more is
	// corrupt, and trusting it would allocate gigabytes.
	if want > maxVmlinux || int64(want) > 50*int64(len(payload))+1<<20 {
		return nil, fmt.Errorf("bzImage says its %d-byte payload holds %d bytes: %w", len(payload), want, ErrNotKernel)
	}

	if bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0}) {
		out, err := decodeXZKernel(payload, int64(want))
		if err != nil {
			return nil, fmt.Errorf("decompress xz bzImage payload: %w", err)
		}
		if uint32(len(out)) != want || !isELF(out) {
			return nil, fmt.Errorf("decompress xz bzImage payload: %d bytes (header says %d), ELF %v", len(out), want, isELF(out))
		}
		return out, nil
	}
	r, format, err := decompressor(payload)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.Grow(int(want))
	if _, err := io.Copy(&out, io.LimitReader(r, maxVmlinux)); err != nil {
		return nil, fmt.Errorf("decompress %s bzImage payload: %w", format, err)
	}
	if uint32(out.Len()) != want {
		return nil, fmt.Errorf("decompress %s bzImage payload: got %d bytes, header says %d", format, out.Len(), want)
	}
	if !isELF(out.Bytes()) {
		return nil, fmt.Errorf("decompress %s bzImage payload: result is not ELF", format)
	}
	return out.Bytes(), nil
}

// decompressor picks a reader for the payload by its magic bytes.
func decompressor(p []byte) (io.Reader, string, error) {
	switch {
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(bytes.NewReader(p), zstd.WithDecoderMaxWindow(1<<31), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "zstd", err
		}
		return d.IOReadCloser(), "zstd", nil
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(p))
		if err == nil {
			r.Multistream(false)
		}
		return r, "gzip", err
	case bytes.HasPrefix(p, []byte("BZh")):
		return bzip2.NewReader(bytes.NewReader(p)), "bzip2", nil
	case bytes.HasPrefix(p, []byte{0x5d, 0, 0}):
		r, err := lzma.NewReader(bytes.NewReader(p))
		return r, "lzma", err
	case isELF(p):
		return bytes.NewReader(p), "uncompressed", nil
	}
	// lz4 and lzo have no decoder in the standard library or go.mod.
	return nil, "", fmt.Errorf("bzImage payload compression with magic %x is not supported: use a kernel built with xz, zstd, gzip, bzip2 or lzma, or pass its ELF vmlinux", p[:min(len(p), 6)])
}

var linuxVersionRE = regexp.MustCompile(`Linux version (\S+)`)

// KernelRelease finds the kernel release (what `uname -r` prints, the name
// of its /lib/modules directory) in a bzImage or an ELF vmlinux. It
// returns "" when none is found.
func KernelRelease(b []byte) string {
	if isBzImage(b) {
		// kernel_version points to a NUL-terminated string, 0x200 before
		// its file offset.
		off := int(binary.LittleEndian.Uint16(b[hdrKernelVersion:])) + 0x200
		if off > 0x200 && off < len(b) {
			s := b[off:min(len(b), off+256)]
			if i := bytes.IndexByte(s, 0); i > 0 {
				if f := bytes.Fields(s[:i]); len(f) > 0 {
					return string(f[0])
				}
			}
		}
	}
	if m := linuxVersionRE.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}
