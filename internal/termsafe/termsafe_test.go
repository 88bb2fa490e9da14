package termsafe

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text: 100% ok\n\tindented", "plain text: 100% ok\n\tindented"},
		{"héllo wörld ✓", "héllo wörld ✓"},
		{"\x1b]0;owned\x07title", `\x1b]0;owned\x07title`},
		{"\x1b[2J\x1b[Hclear", `\x1b[2J\x1b[Hclear`},
		{"over\rwrite", `over\x0dwrite`},
		{"back\bspace\x7f", `back\x08space\x7f`},
		{"nul\x00", `nul\x00`},
		{"c1 csi \u009b31m", `c1 csi \u009b31m`},
		{"raw c1 byte \x9b31m", `raw c1 byte \x9b31m`},
		{"bad utf8 \xff\xfe", `bad utf8 \xff\xfe`},
		{"bidi \u202eevil\u202c", `bidi \u202eevil\u202c`},
		{`already \x1b escaped`, `already \x1b escaped`},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStringSafeInputNotCopied(t *testing.T) {
	s := strings.Repeat("safe line\n", 100)
	if n := testing.AllocsPerRun(100, func() { String(s) }); n != 0 {
		t.Errorf("String of safe text allocated %v times", n)
	}
}

// FuzzString checks that nothing a terminal acts on survives, that safe
// text passes unchanged, and that String is idempotent.
func FuzzString(f *testing.F) {
	for _, s := range []string{"", "ok\n", "\x1b[31mred\x1b[0m", "\u009b\u202e", "\xc2\x9b", "\xe2\x80", `\x1b`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		if !utf8.ValidString(out) {
			t.Fatalf("String(%q) = %q: not UTF-8", s, out)
		}
		for _, r := range out {
			if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f) || unicode.Is(unicode.Bidi_Control, r) {
				t.Fatalf("String(%q) = %q: keeps %U", s, out, r)
			}
		}
		if again := String(out); again != out {
			t.Fatalf("String not idempotent: %q -> %q -> %q", s, out, again)
		}
		if unsafeIndex(s) < 0 && out != s {
			t.Fatalf("String changed safe text %q to %q", s, out)
		}
	})
}
