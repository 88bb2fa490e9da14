package cli

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/rotatelog"
)

// TestSupervisorLogIsCapped moves a supervisor's log into a VM dir and
// logs 30 MB there, as a guest that keeps breaking its sessions makes a
// supervisor do: the log keeps its newest lines within its cap, and the
// stand-in for fd 2 follows the file.
func TestSupervisorLogIsCapped(t *testing.T) {
	var stderr bytes.Buffer
	env := &Env{Stderr: &stderr, logOut: &logOutput{w: &stderr}}
	env.Log = slog.New(slog.NewTextHandler(env.logOut, nil))
	// Stands for fd 2.
	fd, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	dir := t.TempDir()
	env.Log.Info("before the move")
	if err := env.logToDir(dir, fd); err != nil {
		t.Fatal(err)
	}
	noise := strings.Repeat("x", 200)
	for i := range 100000 {
		env.Log.Info("channel broke; reconnecting", "err", noise, "i", i)
	}
	unix.Write(fd, []byte("crash report\n"))
	p := filepath.Join(dir, supervisorLog)
	for _, f := range []string{p, p + ".1"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > rotatelog.DefaultLimit {
			t.Errorf("%s holds %d bytes, over the cap of %d", f, st.Size(), rotatelog.DefaultLimit)
		}
	}
	end, _ := rotatelog.Tail(p, 200)
	if !bytes.Contains(end, []byte("i=99999\ncrash report\n")) {
		t.Errorf("log ends %q: want the last line, then what fd 2 got", end)
	}
	if got := stderr.String(); !strings.Contains(got, "before the move") || strings.Contains(got, "reconnecting") {
		t.Errorf("stderr got %q: want only what came before the move", got)
	}
}
