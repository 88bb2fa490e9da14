package artifacts

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"
)

// ToolError is a host tool (apt-get, debootstrap, mkfs.ext4...) that
// exited badly, with the last lines of what it printed.
type ToolError struct {
	Tool string
	Err  error
	Tail string
}

func (e *ToolError) Error() string {
	if e.Tail == "" {
		return fmt.Sprintf("%s: %v", e.Tool, e.Err)
	}
	return fmt.Sprintf("%s: %v; its last output:\n%s", e.Tool, e.Err, e.Tail)
}

func (e *ToolError) Unwrap() error { return e.Err }

// tailLines is how much of a failing tool's output an error carries.
const tailLines = 15

// runTool runs name with args in dir, capturing stdout and stderr
// together. A failure becomes a *ToolError carrying the output's tail;
// a missing binary says which package provides it.
func runTool(ctx context.Context, log *slog.Logger, dir string, env []string, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s not found: install it (%s): %w", name, installHint(name), err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(cmd.Environ(), env...)
	}
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	log.Debug("ran tool", "tool", name, "args", args, "took", time.Since(start).Round(time.Millisecond), "err", err)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return out.Bytes(), &ToolError{Tool: name, Err: err, Tail: tail(out.String(), tailLines)}
	}
	return out.Bytes(), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// installHint names the Debian command that provides a tool setup uses.
func installHint(tool string) string {
	pkg := map[string]string{
		"apt-get":     "apt",
		"apt-cache":   "apt",
		"dpkg-deb":    "dpkg",
		"debootstrap": "debootstrap",
		"mkfs.ext4":   "e2fsprogs",
		"chroot":      "coreutils",
	}[tool]
	if pkg == "" {
		pkg = tool
	}
	return "apt-get install " + pkg
}
