package artifacts

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The kernel compresses with `xz --check=crc32 --x86 --lzma2`: one block
// whose filter chain is the x86 branch converter (BCJ) then LZMA2.
// github.com/ulikunitz/xz reads only plain LZMA2 blocks, so decodeXZKernel
// parses the container itself (tukaani.org/xz/xz-file-format.txt), lets
// ulikunitz decode the raw LZMA2 data, then undoes BCJ.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
	xzCheckCRC32  = 1
)

var errXZ = errors.New("xz: unsupported or corrupt kernel payload")

// decodeXZKernel decodes a single-stream, single-block xz file whose
// filters are [x86 BCJ,] LZMA2, and verifies its CRC32 check.
func decodeXZKernel(p []byte, limit int64) ([]byte, error) {
	if len(p) < 12+12 || !bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}) {
		return nil, errXZ
	}
	check := p[7] & 0x0f
	if crc32.ChecksumIEEE(p[6:8]) != binary.LittleEndian.Uint32(p[8:12]) {
		return nil, fmt.Errorf("%w: stream header checksum", errXZ)
	}
	// The index, found from the footer, gives the block's unpadded size,
	// which locates its check field.
	foot := p[len(p)-12:]
	if !bytes.Equal(foot[10:], []byte("YZ")) {
		return nil, fmt.Errorf("%w: no stream footer", errXZ)
	}
	idxSize := (int(binary.LittleEndian.Uint32(foot[4:8])) + 1) * 4
	if idxSize > len(p)-24 {
		return nil, fmt.Errorf("%w: index size", errXZ)
	}
	idx := p[len(p)-12-idxSize : len(p)-12]
	r := bytes.NewReader(idx[1:])
	nrec, err1 := binary.ReadUvarint(r)
	unpadded, err2 := binary.ReadUvarint(r)
	uncompressed, err3 := binary.ReadUvarint(r)
	if idx[0] != 0 || nrec != 1 || errors.Join(err1, err2, err3) != nil {
		return nil, fmt.Errorf("%w: want one block, index says %d", errXZ, nrec)
	}
	if int64(uncompressed) > limit {
		return nil, fmt.Errorf("%w: %d bytes uncompressed is too large", errXZ, uncompressed)
	}

	blk := p[12:]
	hdrLen := (int(blk[0]) + 1) * 4
	if blk[0] == 0 || hdrLen > len(blk) || crc32.ChecksumIEEE(blk[:hdrLen-4]) != binary.LittleEndian.Uint32(blk[hdrLen-4:hdrLen]) {
		return nil, fmt.Errorf("%w: block header", errXZ)
	}
	hr := bytes.NewReader(blk[2 : hdrLen-4])
	flags := blk[1]
	if flags&0x40 != 0 {
		if _, err := binary.ReadUvarint(hr); err != nil {
			return nil, errXZ
		}
	}
	if flags&0x80 != 0 {
		if _, err := binary.ReadUvarint(hr); err != nil {
			return nil, errXZ
		}
	}
	x86, x86Start := false, uint32(0)
	var dictProp byte
	nfilters := int(flags&3) + 1
	for i := 0; i < nfilters; i++ {
		id, err1 := binary.ReadUvarint(hr)
		psize, err2 := binary.ReadUvarint(hr)
		if err1 != nil || err2 != nil || psize > 4 {
			return nil, fmt.Errorf("%w: filter flags", errXZ)
		}
		props := make([]byte, psize)
		if _, err := io.ReadFull(hr, props); err != nil {
			return nil, errXZ
		}
		last := i == nfilters-1
		switch {
		case id == xzFilterX86 && !last:
			x86 = true
			if psize == 4 {
				x86Start = binary.LittleEndian.Uint32(props)
			}
		case id == xzFilterLZMA2 && last && psize == 1:
			dictProp = props[0]
		default:
			return nil, fmt.Errorf("%w: filter %#x", errXZ, id)
		}
	}

	// A dictionary larger than the output is never used; bounding it
	// keeps a hostile header from allocating gigabytes.
	dict := min(lzma2DictSize(dictProp), max(int(uncompressed), lzma.MinDictCap))
	lr, err := lzma.Reader2Config{DictCap: dict}.NewReader2(bytes.NewReader(blk[hdrLen:]))
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	out := make([]byte, uncompressed)
	if _, err := io.ReadFull(lr, out); err != nil {
		return nil, fmt.Errorf("xz: lzma2: %w", err)
	}
	if x86 {
		bcjX86Decode(out, x86Start)
	}
	if check == xzCheckCRC32 {
		// The check field follows the block's data, which is padded to a
		// multiple of four bytes.
		at := 12 + (int(unpadded)-4+3)&^3
		if at < 12 || at+4 > len(p) || crc32.ChecksumIEEE(out) != binary.LittleEndian.Uint32(p[at:]) {
			return nil, fmt.Errorf("%w: CRC32 mismatch", errXZ)
		}
	}
	return out, nil
}

// lzma2DictSize decodes LZMA2's one-byte dictionary size property.
func lzma2DictSize(b byte) int {
	if b >= 40 {
		return 1<<32 - 1
	}
	return (2 | int(b&1)) << (b/2 + 11)
}

// bcjX86Decode undoes the x86 branch converter in place: the encoder
// turned the relative targets of CALL (E8) and JMP (E9) into absolute
// ones so that repeated calls compress better. start is the stream's
// start offset (usually 0). Like the encoder, it leaves the last four
// bytes alone.
func bcjX86Decode(buf []byte, start uint32) {
	// For a run of recent E8/E9 bytes (prevMask, one bit per byte back),
	// whether a new candidate is allowed and which of its bytes to test.
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msb := func(b byte) bool { return b == 0 || b == 0xff }

	if len(buf) <= 4 {
		return
	}
	end := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < end; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if prevPos < 0 || d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(bitNum[prevMask])]
				if !allowed[prevMask] || msb(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msb(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (start + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := bitNum[prevMask] * 8
			if !msb(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}
