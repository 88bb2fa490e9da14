package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fcvm/fcvm/internal/engine"
)

type attachOptions struct {
	noStdin    bool
	sigProxy   bool
	detachKeys string
	name       string
}

func newAttachCmd(env *Env) *cobra.Command {
	o := &attachOptions{}
	cmd := &cobra.Command{
		Use:   "attach [--no-stdin] [--detach-keys KEYS] NAME|ID",
		Short: "Stream a running container's output (and your input to it) until it exits",
		Long: `Attach to the container of a running VM, as podman attach: its output from
now on, your input to its stdin (a container run with -i), until it exits;
the exit code is the container's. With a terminal (run -t) yours goes raw
and follows its size. The detach keys (default ctrl-p,ctrl-q) leave the
container running; so does ending fcvm without a terminal, unless
--sig-proxy passes the signal on.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			return runAttach(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.noStdin, "no-stdin", false, "do not send input to the container")
	f.BoolVar(&o.sigProxy, "sig-proxy", true, "pass the signals fcvm gets (Ctrl-C) to the container's main process; without a terminal only")
	f.StringVar(&o.detachKeys, "detach-keys", "ctrl-p,ctrl-q", `keys that detach and leave the container running ("" for none)`)
	return cmd
}

// runAttach exits with the container's code, as podman's attach does.
func runAttach(ctx context.Context, env *Env, o *attachOptions) error {
	keys, err := parseDetachKeys(o.detachKeys)
	if err != nil {
		return err
	}
	e := env.engine()
	rec, err := e.Running(o.name)
	if err != nil {
		return err
	}
	ctx, detach := context.WithCancel(ctx)
	defer detach()
	var detached bool
	ao := engine.AttachOptions{Stdout: env.Stdout, Stderr: env.Stderr}
	stdinFile, _ := env.Stdin.(*os.File)
	tty := false
	if p := e.Plan(rec); p != nil && p.TTY && stdinFile != nil && term.IsTerminal(int(stdinFile.Fd())) {
		tty = true
		defer rawTerminal(stdinFile)()
		resize := make(chan [2]uint16, 1)
		if rows, cols, ok := terminalSize(stdinFile); ok {
			resize <- [2]uint16{rows, cols}
		}
		defer followSize(stdinFile, func(rows, cols uint16) {
			select {
			case resize <- [2]uint16{rows, cols}:
			default:
			}
		})()
		ao.Resize = resize
	}
	if !o.noStdin {
		ao.Stdin = &detachReader{r: env.Stdin, keys: keys, detach: func() { detached = true; detach() }}
	}
	if o.sigProxy && !tty {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
		defer signal.Stop(sigs)
		fwd := make(chan syscall.Signal, 1)
		go func() {
			for s := range sigs {
				fwd <- s.(syscall.Signal)
			}
		}()
		ao.Signals = fwd
	}
	code, err := e.Attach(ctx, rec.ID, ao)
	if detached {
		return nil
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

// parseDetachKeys reads podman's --detach-keys: comma-separated keys, each
// a character or ctrl-X.
func parseDetachKeys(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	var keys []byte
	for _, k := range strings.Split(s, ",") {
		switch {
		case len(k) == 1:
			keys = append(keys, k[0])
		case strings.HasPrefix(k, "ctrl-") && len(k) == 6:
			c := k[5]
			switch {
			case c >= 'a' && c <= 'z':
				keys = append(keys, c-'a'+1)
			case c >= '@' && c <= '_':
				keys = append(keys, c-'@')
			default:
				return nil, fmt.Errorf("--detach-keys %q: %q is not a key: use a character or ctrl-[a-z@[\\]^_]", s, k)
			}
		default:
			return nil, fmt.Errorf("--detach-keys %q: %q is not a key: use a character or ctrl-[a-z@[\\]^_]", s, k)
		}
	}
	return keys, nil
}

// detachReader passes input through until the detach keys come in a row:
// then it calls detach and sends nothing more (no end of input: the
// container's stdin stays open for the next attach). Keys that start the
// sequence but do not finish it are passed on, at the end of input too.
type detachReader struct {
	r      io.Reader
	keys   []byte
	detach func()

	matched int    // how many of keys the input ends with
	pending []byte // passed input not yet returned
	buf     []byte
	done    bool
}

func (d *detachReader) Read(p []byte) (int, error) {
	for len(d.pending) == 0 {
		if d.done {
			select {} // the attach ends without an end of input
		}
		if d.buf == nil {
			d.buf = make([]byte, 32<<10)
		}
		n, err := d.r.Read(d.buf)
		d.scan(d.buf[:n])
		if err != nil && !d.done {
			// The input ended: what was held back was input after all.
			d.pending = append(d.pending, d.keys[:d.matched]...)
			d.matched = 0
			if len(d.pending) == 0 {
				return 0, err
			}
		}
	}
	n := copy(p, d.pending)
	d.pending = d.pending[n:]
	return n, nil
}

// scan moves in to pending, holding back a partial detach sequence.
func (d *detachReader) scan(in []byte) {
	if len(d.keys) == 0 {
		d.pending = append(d.pending, in...)
		return
	}
	for _, b := range in {
		if b == d.keys[d.matched] {
			d.matched++
			if d.matched == len(d.keys) {
				d.done = true
				d.detach()
				return
			}
			continue
		}
		d.pending = append(d.pending, d.keys[:d.matched]...)
		d.matched = 0
		if b == d.keys[0] {
			d.matched = 1
			continue
		}
		d.pending = append(d.pending, b)
	}
}
