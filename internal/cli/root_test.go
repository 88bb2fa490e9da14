package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestErrorsReachTheTerminalEscaped runs a command whose error repeats
// text fcvm did not write (here a VM name; in the field a guest's refusal
// or console): what reaches stderr shows the control sequences instead of
// handing them to the terminal.
func TestErrorsReachTheTerminalEscaped(t *testing.T) {
	t.Setenv("FCVM_DATA_DIR", t.TempDir())
	t.Setenv("FCVM_RUNTIME_DIR", t.TempDir())
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"stop", "web\x1b]0;owned\x07\x1b[2J"}, nil, &stdout, &stderr)
	if code == 0 {
		t.Fatalf("stop of an unknown VM succeeded: %s", stdout.String())
	}
	got := stderr.String()
	if strings.ContainsAny(got, "\x1b\x07") {
		t.Errorf("stderr carries control characters: %q", got)
	}
	if !strings.Contains(got, `web\x1b]0;owned\x07\x1b[2J`) {
		t.Errorf("stderr = %q, want the name with its escapes shown", got)
	}
}
