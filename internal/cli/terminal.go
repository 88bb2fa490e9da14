package cli

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// The user's terminal while a container or exec has one of its own: the
// local side goes raw (every key, Ctrl-C included, is a byte for the
// remote terminal) and follows window size changes.

// terminalSize is f's size as rows and columns, ok false when f is not a
// terminal.
func terminalSize(f *os.File) (rows, cols uint16, ok bool) {
	w, h, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0, 0, false
	}
	return uint16(h), uint16(w), true
}

// rawTerminal puts f in raw mode until the returned restore is called.
func rawTerminal(f *os.File) (restore func()) {
	old, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return func() {}
	}
	return func() { term.Restore(int(f.Fd()), old) }
}

// followSize calls resize with f's size on every SIGWINCH until the
// returned stop is called.
func followSize(f *os.File, resize func(rows, cols uint16)) (stop func()) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-winch:
				if rows, cols, ok := terminalSize(f); ok {
					resize(rows, cols)
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(winch); close(done) }
}
