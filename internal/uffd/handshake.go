package uffd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Page sizes a region may have: base pages and 2 MiB hugetlbfs pages.
const (
	PageSize4K = 4 << 10
	PageSize2M = 2 << 20
)

// MaxHandshakeSize bounds the handshake message. Firecracker sends one
// short JSON object per guest memory region; 64 KiB holds several hundred.
const MaxHandshakeSize = 64 << 10

// Region is one guest memory region as Firecracker describes it: Size
// bytes at BaseHostVirtAddr in the client's address space, whose contents
// are at Offset in the memory file, mapped with pages of PageSize bytes.
type Region struct {
	BaseHostVirtAddr uint64 `json:"base_host_virt_addr"`
	Size             uint64 `json:"size"`
	Offset           uint64 `json:"offset"`
	PageSize         uint64 `json:"page_size"`
}

// wireRegion is what arrives on the socket. page_size_kib is the
// deprecated spelling of page_size; despite its name Firecracker fills it
// with bytes, the same value as page_size.
type wireRegion struct {
	BaseHostVirtAddr *uint64 `json:"base_host_virt_addr"`
	Size             *uint64 `json:"size"`
	Offset           *uint64 `json:"offset"`
	PageSize         uint64  `json:"page_size"`
	PageSizeKiB      uint64  `json:"page_size_kib"`
}

// ErrBadHandshake is wrapped by every error DecodeHandshake returns.
var ErrBadHandshake = errors.New("uffd: bad handshake")

// HandshakeError says what is wrong with a handshake.
type HandshakeError struct {
	Problem string
}

func (e *HandshakeError) Error() string { return "bad handshake: " + e.Problem }
func (e *HandshakeError) Unwrap() error { return ErrBadHandshake }

func badf(format string, args ...any) error {
	return &HandshakeError{Problem: fmt.Sprintf(format, args...)}
}

// DecodeHandshake parses Firecracker's region list and checks it against
// a memory file of memSize bytes. Every region must have a non-zero size,
// a page size of 4 KiB or 2 MiB, an address and size aligned to that page
// size, and lie inside the file; no two regions may overlap in the
// client's address space or in the file. The regions come back in the
// order they were sent.
func DecodeHandshake(data []byte, memSize uint64) ([]Region, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, badf("empty message")
	}
	var wire []wireRegion
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&wire); err != nil {
		return nil, badf("not a JSON array of regions: %v", err)
	}
	if dec.More() {
		return nil, badf("trailing data after the JSON array")
	}
	if len(wire) == 0 {
		return nil, badf("no regions")
	}
	regions := make([]Region, len(wire))
	for i, w := range wire {
		if w.BaseHostVirtAddr == nil || w.Size == nil || w.Offset == nil {
			return nil, badf("region %d: base_host_virt_addr, size and offset are required", i)
		}
		ps := w.PageSize
		switch {
		case ps == 0:
			ps = w.PageSizeKiB
		case w.PageSizeKiB != 0 && w.PageSizeKiB != ps:
			return nil, badf("region %d: page_size %d and page_size_kib %d disagree", i, ps, w.PageSizeKiB)
		}
		r := Region{BaseHostVirtAddr: *w.BaseHostVirtAddr, Size: *w.Size, Offset: *w.Offset, PageSize: ps}
		if err := r.check(memSize); err != nil {
			return nil, badf("region %d: %v", i, err)
		}
		regions[i] = r
	}
	if err := checkOverlap(regions); err != nil {
		return nil, err
	}
	return regions, nil
}

func (r Region) check(memSize uint64) error {
	switch {
	case r.PageSize != PageSize4K && r.PageSize != PageSize2M:
		return fmt.Errorf("page size %d is neither 4 KiB nor 2 MiB", r.PageSize)
	case r.Size == 0:
		return errors.New("zero size")
	case r.Size%r.PageSize != 0:
		return fmt.Errorf("size %d is not a multiple of the page size %d", r.Size, r.PageSize)
	case r.BaseHostVirtAddr == 0 || r.BaseHostVirtAddr%r.PageSize != 0:
		return fmt.Errorf("address %#x is not aligned to the page size %d", r.BaseHostVirtAddr, r.PageSize)
	case r.BaseHostVirtAddr+r.Size < r.BaseHostVirtAddr:
		return fmt.Errorf("address range %#x+%d wraps around", r.BaseHostVirtAddr, r.Size)
	case r.Offset+r.Size < r.Offset || r.Offset+r.Size > memSize:
		return fmt.Errorf("file range [%d, %d+%d) is outside the memory file of %d bytes", r.Offset, r.Offset, r.Size, memSize)
	}
	return nil
}

// checkOverlap refuses regions that share client addresses (two handlers
// for one fault) or file bytes (never produced by Firecracker, and it
// would make the working-set file ambiguous).
func checkOverlap(regions []Region) error {
	idx := make([]int, len(regions))
	for i := range idx {
		idx[i] = i
	}
	for _, key := range []struct {
		name  string
		start func(Region) uint64
	}{
		{"address space", func(r Region) uint64 { return r.BaseHostVirtAddr }},
		{"memory file", func(r Region) uint64 { return r.Offset }},
	} {
		sort.Slice(idx, func(a, b int) bool { return key.start(regions[idx[a]]) < key.start(regions[idx[b]]) })
		for k := 1; k < len(idx); k++ {
			prev, cur := regions[idx[k-1]], regions[idx[k]]
			if key.start(prev)+prev.Size > key.start(cur) {
				return badf("regions %d and %d overlap in the %s", min(idx[k-1], idx[k]), max(idx[k-1], idx[k]), key.name)
			}
		}
	}
	return nil
}

// incomplete reports whether data could still become valid JSON with
// more bytes: a handshake split across reads.
func incomplete(data []byte) bool {
	var v any
	err := json.NewDecoder(bytes.NewReader(data)).Decode(&v)
	return err == io.EOF || err == io.ErrUnexpectedEOF
}
