package uffd

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The userfaultfd ABI from <linux/userfaultfd.h>. golang.org/x/sys/unix
// does not carry it, so the parts the server needs live here. The ioctl
// numbers are _IOWR/_IOR(0xAA, nr, struct) and are the same on amd64 and
// arm64.
const (
	ioctlUFFDIOWake     = 0x8010AA02 // _IOR(0xAA, 0x02, struct uffdio_range)
	ioctlUFFDIOCopy     = 0xC028AA03 // _IOWR(0xAA, 0x03, struct uffdio_copy)
	ioctlUFFDIOZeropage = 0xC020AA04 // _IOWR(0xAA, 0x04, struct uffdio_zeropage)

	eventPagefault = 0x12
	eventFork      = 0x13
	eventRemap     = 0x14
	eventRemove    = 0x15
	eventUnmap     = 0x16

	// msgSize is sizeof(struct uffd_msg).
	msgSize = 32
)

type uffdioRange struct {
	start uint64
	len   uint64
}

type uffdioCopy struct {
	dst  uint64
	src  uint64
	len  uint64
	mode uint64
	copy int64
}

type uffdioZeropage struct {
	rng      uffdioRange
	mode     uint64
	zeropage int64
}

// msg is the part of a struct uffd_msg the server acts on. For a page
// fault a is the faulting address; for a remove or unmap, [a, b) is the
// range. struct uffd_msg puts pagefault.address at byte 16 and
// remove.start/end at 8 and 16.
type msg struct {
	event uint8
	a, b  uint64
}

func decodeMsg(p []byte) msg {
	m := msg{event: p[0]}
	switch m.event {
	case eventPagefault:
		m.a = binary.NativeEndian.Uint64(p[16:])
	case eventRemove, eventUnmap:
		m.a = binary.NativeEndian.Uint64(p[8:])
		m.b = binary.NativeEndian.Uint64(p[16:])
	}
	return m
}

// ioctlCopy copies len bytes from src into the client at dst and wakes
// any thread waiting on that range. It returns how many bytes were
// copied, which can be non-zero together with an error (EEXIST, EAGAIN).
func ioctlCopy(fd int, dst, src, n uint64) (uint64, error) {
	c := uffdioCopy{dst: dst, src: src, len: n}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlUFFDIOCopy, uintptr(unsafe.Pointer(&c)))
	done := uint64(0)
	if c.copy > 0 {
		done = uint64(c.copy)
	}
	if e != 0 {
		return done, e
	}
	return done, nil
}

func ioctlZeropage(fd int, dst, n uint64) (uint64, error) {
	z := uffdioZeropage{rng: uffdioRange{start: dst, len: n}}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlUFFDIOZeropage, uintptr(unsafe.Pointer(&z)))
	done := uint64(0)
	if z.zeropage > 0 {
		done = uint64(z.zeropage)
	}
	if e != 0 {
		return done, e
	}
	return done, nil
}

func ioctlWake(fd int, start, n uint64) error {
	r := uffdioRange{start: start, len: n}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlUFFDIOWake, uintptr(unsafe.Pointer(&r)))
	if e != 0 {
		return e
	}
	return nil
}
