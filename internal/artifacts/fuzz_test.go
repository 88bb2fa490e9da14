package artifacts

import (
	"encoding/binary"
	"testing"
)

// FuzzExtractVmlinux feeds --kernel-like input to the bzImage and xz
// parsers: they must fail cleanly, never panic or run away.
func FuzzExtractVmlinux(f *testing.F) {
	bz := make([]byte, 0x600)
	copy(bz[hdrMagic:], "HdrS")
	binary.LittleEndian.PutUint16(bz[hdrVersion:], 0x20f)
	bz[hdrSetupSects] = 1
	binary.LittleEndian.PutUint32(bz[hdrPayloadOffset:], 0)
	binary.LittleEndian.PutUint32(bz[hdrPayloadLength:], 0x100)
	copy(bz[0x400:], []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 1, 0x69, 0x22, 0xde, 0x36})
	f.Add(bz)
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if out, err := ExtractVmlinux(b); err == nil && !isELF(out) {
			t.Fatal("success without an ELF result")
		}
		KernelRelease(b)
		decodeXZKernel(b, 1<<20)
		stripModuleSignature(b)
	})
}

func FuzzBCJX86(f *testing.F) {
	f.Add([]byte{0xe8, 0, 0, 0, 0, 0xe9, 0xff, 0xff, 0xff, 0xff, 0xe8, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		bcjX86Decode(b, 0)
	})
}
