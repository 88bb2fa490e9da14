package cli

import (
	"context"
	"errors"
	"strings"

	"github.com/spf13/cobra"
)

type cpOptions struct {
	src, dst string
}

func newCpCmd(env *Env) *cobra.Command {
	o := &cpOptions{}
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files between the host and a VM's container",
		Long: `Copy files and directories between the host and the container of a running
VM, as podman cp: one of SRC and DST is NAME:PATH, the other a host path, or
"-" for a tar stream on stdin (to NAME:DIR) or stdout (from NAME:PATH).

SRC/. copies a directory's contents. A destination directory that exists
receives SRC; a destination that does not exist is the name of the copy (its
directory must exist); an existing file is replaced by a file. Modes and
times are kept. Files copied to the host belong to you, without set-user-ID
or set-group-ID bits; what the guest sends is unpacked without following a
symlink out of the destination, with no device nodes and bounded in size.
Paths in the container resolve in its root: .. and symlinks stay inside.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.src, o.dst = args[0], args[1]
			return runCp(cmd.Context(), env, o)
		},
	}
	return cmd
}

// vmPath splits NAME:PATH; a host path with a colon starts with / or .
// (as podman wants it written).
func vmPath(arg string) (name, p string, ok bool) {
	if strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") {
		return "", arg, false
	}
	name, p, ok = strings.Cut(arg, ":")
	return name, p, ok
}

func runCp(ctx context.Context, env *Env, o *cpOptions) error {
	sname, spath, sVM := vmPath(o.src)
	dname, dpath, dVM := vmPath(o.dst)
	e := env.engine()
	switch {
	case sVM && dVM:
		return errors.New("cp: copying between VMs is not supported: copy to the host first")
	case !sVM && !dVM:
		return errors.New("cp: one of SRC and DST must be NAME:PATH, a VM's path")
	case sVM && spath == "", dVM && dpath == "":
		return errors.New("cp: NAME:PATH needs a path after the colon")
	case sVM && o.dst == "-":
		return e.CopyOutStream(ctx, sname, spath, env.Stdout)
	case sVM:
		return e.CopyFromVM(ctx, sname, spath, o.dst)
	case o.src == "-":
		return e.CopyInStream(ctx, dname, env.Stdin, dpath)
	default:
		return e.CopyToVM(ctx, dname, o.src, dpath)
	}
}
