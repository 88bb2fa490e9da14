package cli

// Output helpers every listing verb shares (ls, inspect, image ls).

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"text/template"
	"time"
)

// humanDuration rounds d the way podman and docker show ages: "Less than a
// second", "5 seconds", "About a minute", "3 hours", "2 weeks".
func humanDuration(d time.Duration) string {
	secs := int(d.Seconds())
	mins := int(d.Minutes())
	hours := int(d.Round(time.Hour).Hours())
	switch {
	case secs < 1:
		return "Less than a second"
	case secs == 1:
		return "1 second"
	case secs < 60:
		return fmt.Sprintf("%d seconds", secs)
	case mins == 1:
		return "About a minute"
	case mins < 60:
		return fmt.Sprintf("%d minutes", mins)
	case hours == 1:
		return "About an hour"
	case hours < 48:
		return fmt.Sprintf("%d hours", hours)
	case hours < 24*7*2:
		return fmt.Sprintf("%d days", hours/24)
	case hours < 24*30*2:
		return fmt.Sprintf("%d weeks", hours/24/7)
	case hours < 24*365*2:
		return fmt.Sprintf("%d months", hours/24/30)
	default:
		return fmt.Sprintf("%d years", hours/24/365)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeTemplate runs the Go template text once per item, each on its own
// line, as podman's --format does.
func writeTemplate[T any](w io.Writer, text string, items []T) error {
	tmpl, err := template.New("format").Parse(text)
	if err != nil {
		return fmt.Errorf("parse --format: %w", err)
	}
	bw := bufio.NewWriter(w)
	for _, it := range items {
		if err := tmpl.Execute(bw, it); err != nil {
			return fmt.Errorf("run --format: %w", err)
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// unjoin splits an errors.Join result into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
