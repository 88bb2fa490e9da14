package cli

import (
	"io"
	"path/filepath"
	"sync"

	"github.com/fcvm/fcvm/internal/rotatelog"
)

// logOutput is where Env.Log writes: the terminal's stderr, until a
// detached supervisor moves its log into the VM's dir.
type logOutput struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (o *logOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.w.Write(p)
}

func (o *logOutput) set(w io.Writer) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.w = w
}

// supervisorLog is a detached supervisor's log in its VM's dir.
const supervisorLog = "supervisor.log"

// logToDir moves env's log into dir's supervisor.log, for the detached
// supervisor of a VM. The file rotates at rotatelog.DefaultLimit: much of
// what a supervisor logs is its guest's doing (sessions broken, volumes
// refused), for as long as the VM runs. stderrFD (2) follows the file, so
// a crash report lands there too. Every write is synchronous: nothing is
// lost when the process exits without closing the log.
func (env *Env) logToDir(dir string, stderrFD int) error {
	w, err := rotatelog.Create(filepath.Join(dir, supervisorLog), 0)
	if err != nil {
		return err
	}
	if err := w.Mirror(stderrFD); err != nil {
		w.Close()
		return err
	}
	env.logOut.set(w)
	return nil
}
