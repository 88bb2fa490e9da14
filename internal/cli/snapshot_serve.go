package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/supervisor"
	"github.com/fcvm/fcvm/internal/uffd"
)

type snapshotServeOptions struct {
	tag        string
	memFile    string
	socket     string
	workingSet bool
}

func newSnapshotServeCmd(env *Env) *cobra.Command {
	var o snapshotServeOptions
	cmd := &cobra.Command{
		Use:   "serve [TAG] | --mem-file PATH --socket PATH",
		Short: "Serve snapshot memory to Firecracker clones over userfaultfd",
		Long: `Serve a guest memory file to Firecracker processes restoring with
mem_backend {"backend_type": "Uffd", "backend_path": SOCKET}. Many clones
can share one server. The socket path is printed once it is listening; the
server runs until SIGTERM or SIGINT and removes the socket when it stops.
SIGUSR1 prints per-clone statistics (faults, bytes, p50/p99 latency) to
stderr.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.tag = args[0]
			}
			return runSnapshotServe(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.memFile, "mem-file", "", "raw Firecracker guest memory file to serve")
	f.StringVar(&o.socket, "socket", "", "Unix socket to listen on (Firecracker's backend_path)")
	f.BoolVar(&o.workingSet, "working-set", true, "record the first clone's page order beside the memory file and prefetch it into later clones")
	return cmd
}

func runSnapshotServe(ctx context.Context, env *Env, o snapshotServeOptions) error {
	var serve *supervisor.ServeRecord
	if o.tag != "" {
		if o.memFile != "" || o.socket != "" {
			return errors.New("serve: give a TAG or --mem-file and --socket, not both")
		}
		var err error
		if serve, err = supervisor.PrepareServe(env.Dirs, o.tag); err != nil {
			return err
		}
		o.memFile, o.socket = serve.MemFile, serve.Socket
	} else if o.memFile == "" || o.socket == "" {
		return errors.New("serve: give both --mem-file PATH and --socket PATH")
	}
	srv, err := uffd.NewServer(uffd.Options{
		MemFile:            o.memFile,
		Socket:             o.socket,
		Log:                env.Log,
		RecordWorkingSet:   o.workingSet,
		PrefetchWorkingSet: o.workingSet,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	if serve != nil {
		if err := serve.Register(); err != nil {
			srv.Close()
			return errors.Join(err, <-served)
		}
		defer serve.Unregister()
		fmt.Fprintf(env.Stdout, "Serve PID: %d\nSocket: %s\n", os.Getpid(), srv.SocketPath())
	} else {
		fmt.Fprintln(env.Stdout, srv.SocketPath())
	}
	for {
		select {
		case <-usr1:
			uffd.WriteStats(env.Stderr, srv.Stats())
		case <-ctx.Done():
			// As the original fcvm: a memory server takes its clones down
			// with it, since they would hang on their next missing page.
			srv.SignalClients(syscall.SIGKILL)
			supervisor.StopClones(env.Dirs, os.Getpid())
			err := srv.Close()
			return errors.Join(err, <-served)
		case err := <-served:
			return errors.Join(err, srv.Close())
		}
	}
}
