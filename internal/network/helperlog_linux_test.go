package network

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/rotatelog"
)

// TestHelperLog: a helper's output reaches its log, and what it writes
// beyond the cap is rotated away instead of filling the disk.
func TestHelperLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "helper.log")
	l, err := newHelperLog(path)
	if err != nil {
		t.Fatal(err)
	}
	// 3 x the cap, then a last line.
	script := "head -c " + strconv.Itoa(3*rotatelog.DefaultLimit) + " /dev/zero | tr '\\0' x; echo; echo last words >&2; exit 3"
	cmd := exec.Command("sh", "-c", script)
	cmd.Stdout, cmd.Stderr = l.w(), l.w()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l.closeW()
	cmd.Wait()
	if got := l.text(); !strings.HasSuffix(got, "last words") {
		t.Errorf("log ends %q, want the helper's last words", got[max(0, len(got)-40):])
	}
	var total int64
	for _, p := range []string{path, path + ".1"} {
		if st, err := os.Stat(p); err == nil {
			total += st.Size()
		}
	}
	if total > 2*rotatelog.DefaultLimit {
		t.Errorf("the log holds %d bytes, more than twice the cap %d", total, rotatelog.DefaultLimit)
	}
	if err := l.drain(); err != nil {
		t.Errorf("drain again: %v", err)
	}
}
