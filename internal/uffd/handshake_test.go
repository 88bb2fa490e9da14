package uffd

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeHandshake(t *testing.T) {
	const mem = 16 << 20
	ok := `[{"base_host_virt_addr":140000000000000,"size":2097152,"offset":4194304,"page_size":4096,"page_size_kib":4096},
		{"base_host_virt_addr":139637976727552,"size":4194304,"offset":0,"page_size":2097152,"page_size_kib":2097152}]`
	got, err := DecodeHandshake([]byte(ok), mem)
	if err != nil {
		t.Fatal(err)
	}
	want := []Region{
		{BaseHostVirtAddr: 140000000000000, Size: 2 << 20, Offset: 4 << 20, PageSize: 4096},
		{BaseHostVirtAddr: 139637976727552, Size: 4 << 20, Offset: 0, PageSize: 2 << 20},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("regions (-want +got):\n%s", d)
	}

	// Older Firecracker releases sent only page_size_kib.
	got, err = DecodeHandshake([]byte(`[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size_kib":4096}]`), mem)
	if err != nil || got[0].PageSize != 4096 {
		t.Errorf("page_size_kib only: %v, %v", got, err)
	}
}

func TestDecodeHandshakeRefuses(t *testing.T) {
	const mem = 16 << 20
	r := func(addr, size, off, ps string) string {
		return `{"base_host_virt_addr":` + addr + `,"size":` + size + `,"offset":` + off + `,"page_size":` + ps + `}`
	}
	for _, tc := range []struct{ name, msg, want string }{
		{"empty", ``, "empty message"},
		{"not json", `hello`, "not a JSON array"},
		{"object", `{"a":1}`, "not a JSON array"},
		{"no regions", `[]`, "no regions"},
		{"trailing", `[` + r("4096", "4096", "0", "4096") + `] x`, "trailing data"},
		{"missing field", `[{"size":4096,"offset":0,"page_size":4096}]`, "required"},
		{"zero size", `[` + r("4096", "0", "0", "4096") + `]`, "zero size"},
		{"bad page size", `[` + r("65536", "65536", "0", "65536") + `]`, "neither 4 KiB nor 2 MiB"},
		{"kib disagrees", `[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"page_size_kib":4}]`, "disagree"},
		{"misaligned size", `[` + r("4096", "5000", "0", "4096") + `]`, "not a multiple"},
		{"misaligned addr", `[` + r("4097", "4096", "0", "4096") + `]`, "not aligned"},
		{"huge misaligned", `[` + r("4096", "2097152", "0", "2097152") + `]`, "not aligned"},
		{"outside file", `[` + r("4096", "4096", "16777216", "4096") + `]`, "outside the memory file"},
		{"offset wraps", `[` + r("4096", "4096", "18446744073709551615", "4096") + `]`, "outside the memory file"},
		{"addr wraps", `[` + r("18446744073709547520", "8192", "0", "4096") + `]`, "wraps"},
		{"negative", `[` + r("4096", "-4096", "0", "4096") + `]`, "not a JSON array"},
		{"overlap addr", `[` + r("8192", "8192", "0", "4096") + `,` + r("12288", "4096", "65536", "4096") + `]`, "regions 0 and 1 overlap in the address space"},
		{"overlap file", `[` + r("8192", "8192", "0", "4096") + `,` + r("65536", "4096", "4096", "4096") + `]`, "regions 0 and 1 overlap in the memory file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeHandshake([]byte(tc.msg), mem)
			if err == nil {
				t.Fatalf("accepted %q", tc.msg)
			}
			if !errors.Is(err, ErrBadHandshake) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one containing %q wrapping ErrBadHandshake", err, tc.want)
			}
		})
	}
}

func TestIncomplete(t *testing.T) {
	full := `[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096}]`
	for i := 0; i < len(full); i++ {
		if !incomplete([]byte(full[:i])) {
			t.Errorf("prefix %q not seen as incomplete", full[:i])
		}
	}
	for _, s := range []string{full, "hello", "[1]]", "{}"} {
		if incomplete([]byte(s)) {
			t.Errorf("%q seen as incomplete", s)
		}
	}
}

func FuzzDecodeHandshake(f *testing.F) {
	f.Add([]byte(`[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096,"page_size_kib":4096}]`), uint64(1<<20))
	f.Add([]byte(`[{"base_host_virt_addr":2097152,"size":2097152,"offset":4096,"page_size":2097152}]`), uint64(8<<20))
	f.Add([]byte(`[]`), uint64(0))
	f.Add([]byte(`not json`), uint64(4096))
	f.Fuzz(func(t *testing.T, data []byte, memSize uint64) {
		regions, err := DecodeHandshake(data, memSize)
		if err != nil {
			if !errors.Is(err, ErrBadHandshake) {
				t.Fatalf("error %v does not wrap ErrBadHandshake", err)
			}
			return
		}
		// Whatever is accepted must be safe to serve.
		for i, r := range regions {
			if r.PageSize != PageSize4K && r.PageSize != PageSize2M || r.Size == 0 || r.Size%r.PageSize != 0 ||
				r.BaseHostVirtAddr%r.PageSize != 0 || r.Offset+r.Size > memSize || r.Offset+r.Size < r.Offset ||
				r.BaseHostVirtAddr+r.Size < r.BaseHostVirtAddr {
				t.Fatalf("accepted bad region %d: %+v (file %d)", i, r, memSize)
			}
			for j := range i {
				q := regions[j]
				if r.BaseHostVirtAddr < q.BaseHostVirtAddr+q.Size && q.BaseHostVirtAddr < r.BaseHostVirtAddr+r.Size {
					t.Fatalf("accepted overlapping regions %d and %d", j, i)
				}
			}
		}
	})
}

func TestWorkingSetRoundTrip(t *testing.T) {
	pages := []extent{{8192, 4096}, {12288, 4096}, {0, 4096}, {1 << 20, 2 << 20}, {99 << 20, 4096}}
	got, err := decodeWorkingSet(encodeWorkingSet(pages), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	// Adjacent pages merge; the extent past the 4 MiB file is dropped.
	want := []extent{{8192, 8192}, {0, 4096}, {1 << 20, 2 << 20}}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(extent{})); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if _, err := decodeWorkingSet([]byte("junk"), 1); err == nil {
		t.Error("decoded junk")
	}
}
