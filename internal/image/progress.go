package image

import (
	"fmt"
	"io"
	"time"
)

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format, args...)
	}
}

// progressFunc returns a callback that redraws one "Extracting" line at
// most ten times a second, or nil when w is nil.
func progressFunc(w io.Writer) func(int64) {
	if w == nil {
		return nil
	}
	var last time.Time
	return func(n int64) {
		if now := time.Now(); n > 0 && now.Sub(last) >= 100*time.Millisecond {
			last = now
			fmt.Fprintf(w, "\rExtracting %s\033[K", humanSize(n))
		}
	}
}

// progressEnd replaces the redrawn line with a final one.
func progressEnd(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "\r\033[K"+format, args...)
	}
}

// humanSize formats bytes the way podman does: decimal units, three
// significant digits.
func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"kB", "MB", "GB", "TB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.3g %s", f, u)
		}
	}
	return fmt.Sprintf("%.3g PB", f/unit)
}
