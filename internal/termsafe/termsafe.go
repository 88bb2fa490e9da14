// Package termsafe makes text from an untrusted source, such as an error
// the guest agent reported or the end of a guest's serial console, safe to
// print on the user's terminal.
//
// A terminal obeys the control sequences in what it prints: ESC starts
// sequences that move the cursor, rewrite the window title, or on some
// terminals answer with text that the shell then reads as typed input;
// CR and BS overwrite what was printed before; bidirectional overrides
// reorder a line so that it reads as something else. String replaces each
// of these with a visible escape, so the user sees what the guest sent
// without the terminal acting on it.
//
// Use it for messages about the guest, never for the guest's data: a
// container's output (`fcvm logs`, a foreground run, exec) is the user's
// own and passes through byte for byte, as podman passes it.
package termsafe

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// String returns s with every byte or character a terminal would act on
// written as a visible escape: C0 controls other than newline and tab,
// DEL and bytes that are not UTF-8 as \xNN; C1 controls and Unicode
// bidirectional controls as \uNNNN. Everything else, backslashes
// included, is kept, so String is idempotent and returns safe text
// unchanged without copying it.
func String(s string) string {
	i := unsafeIndex(s)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1, r < utf8.RuneSelf && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// unsafeIndex is the index of the first byte of s that String rewrites,
// or -1.
func unsafeIndex(s string) int {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || unsafeRune(r) {
			return i
		}
		i += n
	}
	return -1
}

// unsafeRune reports whether a terminal may act on r rather than show it.
func unsafeRune(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return false
	case r < 0x20 || r == 0x7f: // C0, DEL
		return true
	case r >= 0x80 && r <= 0x9f: // C1: CSI, OSC, DCS... in one character
		return true
	}
	return unicode.Is(unicode.Bidi_Control, r)
}
