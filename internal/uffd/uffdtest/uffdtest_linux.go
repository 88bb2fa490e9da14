// Package uffdtest plays Firecracker's side of the UFFD handshake, for
// tests and benchmarks of package uffd: it maps guest memory the way
// Firecracker does (anonymous MAP_PRIVATE regions, 2 MiB ones from
// hugetlbfs), creates a userfaultfd with UFFD_FEATURE_EVENT_REMOVE,
// registers every region for MISSING faults, connects and sends the JSON
// region list with the userfaultfd as SCM_RIGHTS.
//
// A client must be a different process from the server, as Firecracker is:
// RunHelper and StartHelper re-execute the test (or benchmark) binary as
// one, driven by a Job in its environment.
package uffdtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The client side of the userfaultfd ABI.
const (
	uffdAPI                 = 0xAA
	uffdUserModeOnly        = 1 // a userfaultfd flag, Linux 5.11
	uffdFeatureEventRemove  = 1 << 3
	ioctlUFFDIOAPI          = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	ioctlUFFDIORegister     = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioRegisterModeMiss  = 1 << 0
	uffdioCopyBit           = 3 // _UFFDIO_COPY, a bit in uffdio_register.ioctls
	hugePageSize            = 2 << 20
	basePageSize            = 4 << 10
	nrHugePagesPath         = "/proc/sys/vm/nr_hugepages"
	freeHugePagesMeminfoKey = "HugePages_Free:"
)

type uffdioAPI struct{ api, features, ioctls uint64 }

type uffdioRegister struct{ start, len, mode, ioctls uint64 }

// RegionSpec is one guest memory region to create: Size bytes whose
// contents are at Offset in the memory file, with 4 KiB or 2 MiB pages.
type RegionSpec struct {
	Size, Offset, PageSize uint64
}

// Guest is a Firecracker-like process's guest memory.
type Guest struct {
	UFFD int
	// Mem holds each region's mapping, in RegionSpec order.
	Mem   [][]byte
	Specs []RegionSpec
	conn  *net.UnixConn
}

// NewGuest maps the regions and registers them with a new userfaultfd.
func NewGuest(specs []RegionSpec) (_ *Guest, err error) {
	g := &Guest{UFFD: -1, Specs: specs}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if e == unix.EPERM {
		// vm.unprivileged_userfaultfd=0 refuses a user without
		// CAP_SYS_PTRACE a userfaultfd that also traps the kernel's
		// accesses; one for user-mode faults is enough for a helper,
		// whose pages are touched by its own code.
		fd, _, e = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly, 0, 0)
	}
	if e != 0 {
		return nil, fmt.Errorf("userfaultfd: %w", e)
	}
	g.UFFD = int(fd)
	api := uffdioAPI{api: uffdAPI, features: uffdFeatureEventRemove}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, ioctlUFFDIOAPI, uintptr(unsafe.Pointer(&api))); e != 0 {
		return nil, fmt.Errorf("UFFDIO_API: %w", e)
	}
	for _, s := range specs {
		flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
		if s.PageSize == hugePageSize {
			flags |= unix.MAP_HUGETLB | unix.MAP_HUGE_2MB
		}
		m, err := unix.Mmap(-1, 0, int(s.Size), unix.PROT_READ|unix.PROT_WRITE, flags)
		if err != nil {
			return nil, fmt.Errorf("map %d-byte region: %w", s.Size, err)
		}
		g.Mem = append(g.Mem, m)
		reg := uffdioRegister{start: uint64(uintptr(unsafe.Pointer(&m[0]))), len: s.Size, mode: uffdioRegisterModeMiss}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, ioctlUFFDIORegister, uintptr(unsafe.Pointer(&reg))); e != 0 {
			return nil, fmt.Errorf("UFFDIO_REGISTER: %w", e)
		}
		if reg.ioctls&(1<<uffdioCopyBit) == 0 {
			return nil, errors.New("UFFDIO_REGISTER: region does not support UFFDIO_COPY")
		}
	}
	return g, nil
}

// Addr is the address of region i.
func (g *Guest) Addr(i int) uint64 { return uint64(uintptr(unsafe.Pointer(&g.Mem[i][0]))) }

// HandshakeJSON is the message Firecracker would send for g: one object
// per region with page_size and its deprecated twin page_size_kib, which
// also holds bytes.
func (g *Guest) HandshakeJSON() []byte {
	type region struct {
		BaseHostVirtAddr uint64 `json:"base_host_virt_addr"`
		Size             uint64 `json:"size"`
		Offset           uint64 `json:"offset"`
		PageSize         uint64 `json:"page_size"`
		PageSizeKiB      uint64 `json:"page_size_kib"`
	}
	rs := make([]region, len(g.Specs))
	for i, s := range g.Specs {
		rs[i] = region{g.Addr(i), s.Size, s.Offset, s.PageSize, s.PageSize}
	}
	b, _ := json.Marshal(rs)
	return b
}

// Handshake connects to socket and sends the regions and the userfaultfd
// in one message. Like Firecracker, it keeps the connection open.
func (g *Guest) Handshake(socket string) error {
	conn, err := Send(socket, g.HandshakeJSON(), g.UFFD)
	if err != nil {
		return err
	}
	g.conn = conn
	return nil
}

// Send connects to socket and sends data with fds attached, in one
// sendmsg. The caller closes the connection.
func Send(socket string, data []byte, fds ...int) (*net.UnixConn, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix(data, oob, nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send handshake: %w", err)
	}
	return conn, nil
}

// Close unmaps the regions and closes the userfaultfd and connection.
func (g *Guest) Close() error {
	for _, m := range g.Mem {
		unix.Munmap(m)
	}
	g.Mem = nil
	if g.UFFD >= 0 {
		unix.Close(g.UFFD)
		g.UFFD = -1
	}
	if g.conn != nil {
		g.conn.Close()
	}
	return nil
}

// ReserveHugePages makes sure at least n 2 MiB pages are free, raising
// vm.nr_hugepages if needed. restore puts the old value back.
func ReserveHugePages(n int) (restore func() error, err error) {
	old, err := os.ReadFile(nrHugePagesPath)
	if err != nil {
		return nil, err
	}
	total, err := strconv.Atoi(strings.TrimSpace(string(old)))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", nrHugePagesPath, err)
	}
	restore = func() error { return os.WriteFile(nrHugePagesPath, old, 0o644) }
	free, err := freeHugePages()
	if err != nil {
		return nil, err
	}
	if free >= n {
		return func() error { return nil }, nil
	}
	want := total + n - free
	if err := os.WriteFile(nrHugePagesPath, []byte(strconv.Itoa(want)), 0o644); err != nil {
		return nil, fmt.Errorf("set %s: %w", nrHugePagesPath, err)
	}
	if free, err = freeHugePages(); err != nil || free < n {
		restore()
		return nil, fmt.Errorf("reserve %d huge pages: only %d free after setting vm.nr_hugepages=%d (%v)", n, free, want, err)
	}
	return restore, nil
}

func freeHugePages() (int, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, freeHugePagesMeminfoKey); ok {
			return strconv.Atoi(strings.TrimSpace(rest))
		}
	}
	return 0, errors.New("no HugePages_Free in /proc/meminfo")
}
