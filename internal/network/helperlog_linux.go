package network

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/fcvm/fcvm/internal/rotatelog"
)

// helperLog is a network helper's stdout and stderr (pasta, slirp4netns):
// a pipe into a log that rotates at rotatelog's cap. The helpers carry the
// guest's traffic and may log about it, so a file they wrote themselves
// would grow as the guest pleases.
type helperLog struct {
	path string
	pipe *rotatelog.Pipe

	once sync.Once
	err  error
}

// newHelperLog opens the log at path; the caller hands w() to the helper
// and calls closeW once it has started.
func newHelperLog(path string) (*helperLog, error) {
	w, err := rotatelog.Create(path, 0)
	if err != nil {
		return nil, err
	}
	p, err := rotatelog.NewPipe(w)
	if err != nil {
		return nil, err
	}
	return &helperLog{path: path, pipe: p}, nil
}

func (l *helperLog) w() *os.File { return l.pipe.W }

// closeW drops this process's write end: the helper holds its own.
func (l *helperLog) closeW() { l.pipe.W.Close() }

// drain waits for the helper's last output (it has exited or been killed)
// and closes the log; once, whoever asks first.
func (l *helperLog) drain() error {
	l.once.Do(func() { l.err = l.pipe.Drain() })
	return l.err
}

// text is what the helper logged, once it has exited: for the error that
// says why it did.
func (l *helperLog) text() string {
	l.drain()
	b, err := rotatelog.Tail(l.path, 16<<10)
	if err != nil {
		return fmt.Sprintf("(its log %s: %v)", l.path, err)
	}
	return strings.TrimSpace(string(b))
}
