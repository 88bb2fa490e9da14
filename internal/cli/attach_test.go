package cli

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestDetachKeys(t *testing.T) {
	keys, err := parseDetachKeys("ctrl-p,ctrl-q")
	if err != nil || !bytes.Equal(keys, []byte{0x10, 0x11}) {
		t.Fatalf("ctrl-p,ctrl-q = %v, %v", keys, err)
	}
	if k, err := parseDetachKeys("ctrl-@,x,ctrl-_"); err != nil || !bytes.Equal(k, []byte{0, 'x', 0x1f}) {
		t.Errorf("ctrl-@,x,ctrl-_ = %v, %v", k, err)
	}
	for _, bad := range []string{"ctrl-", "ctrl-1", "alt-x", "xy"} {
		if _, err := parseDetachKeys(bad); err == nil || !strings.Contains(err.Error(), "--detach-keys") {
			t.Errorf("parseDetachKeys(%q) = %v", bad, err)
		}
	}
	for _, c := range []struct {
		in, out  string
		detached bool
	}{
		{"hello\n", "hello\n", false},
		{"ab\x10\x11cd", "ab", true},
		{"a\x10b\x10\x10\x11c", "a\x10b\x10", true}, // a broken sequence is passed on
		{"\x10", "\x10", false},                     // a sequence cut by the end of input is input
	} {
		detached := false
		d := &detachReader{r: strings.NewReader(c.in), keys: keys, detach: func() { detached = true }}
		var got bytes.Buffer
		buf := make([]byte, 3) // small reads cross the sequence
		for !detached || len(d.pending) > 0 {
			n, err := d.Read(buf)
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
		}
		if want := c.out; got.String() != want || detached != c.detached {
			t.Errorf("%q: passed %q detached %v, want %q %v", c.in, got.String(), detached, c.out, c.detached)
		}
	}
}
