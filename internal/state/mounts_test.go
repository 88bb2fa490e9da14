package state

import (
	"slices"
	"testing"
)

func TestMountsUnder(t *testing.T) {
	info := []byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /var/lib/fcvm/vms/abc/vol rw - fuse fuse rw
41 22 0:36 / /var/lib/fcvm/vms/abc rw - tmpfs tmpfs rw
42 22 0:37 / /var/lib/fcvm/vms/abcdef/x rw - tmpfs tmpfs rw
43 22 0:38 / /var/lib/fcvm/vms/abc/my\040dir rw - tmpfs tmpfs rw
short line
`)
	got := mountsUnder(info, "/var/lib/fcvm/vms/abc/")
	want := []string{"/var/lib/fcvm/vms/abc/vol", "/var/lib/fcvm/vms/abc", "/var/lib/fcvm/vms/abc/my dir"}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder = %q, want %q", got, want)
	}
	for in, want := range map[string]string{`a\040b`: "a b", `a\134b`: `a\b`, `a\04`: `a\04`, `\x`: `\x`, `plain`: "plain"} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzMountsUnder(f *testing.F) {
	f.Add([]byte("43 22 0:38 / /v/abc/my\\040dir rw - tmpfs tmpfs rw\n"), "/v/abc")
	f.Fuzz(func(t *testing.T, info []byte, dir string) {
		mountsUnder(info, dir)
	})
}
