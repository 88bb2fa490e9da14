package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/artifacts"
)

type setupFirecrackerOpts struct {
	from, jailer string
	download     bool
	// releaseURL is the base URL of the release assets (a flag for hosts
	// behind a mirror).
	releaseURL string
}

func newSetupFirecrackerCmd(env *Env) *cobra.Command {
	var o setupFirecrackerOpts
	cmd := &cobra.Command{
		Use:   "firecracker (--from PATH [--jailer PATH] | --download)",
		Short: "Install the firecracker (and jailer) binary fcvm uses",
		Long: `Install firecracker into <data dir>/bin, where fcvm looks before PATH.

Download a release tarball (` + artifacts.FirecrackerRelease + ` or any 1.10+) from
https://github.com/firecracker-microvm/firecracker/releases, unpack it, and:

  fcvm setup firecracker --from release-v1.16.1-x86_64/firecracker-v1.16.1-x86_64 \
      --jailer release-v1.16.1-x86_64/jailer-v1.16.1-x86_64

On a host with internet, --download fetches ` + artifacts.FirecrackerRelease + ` for this
machine's architecture and checks it against the release's SHA-256 file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSetupFirecracker(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "path of a firecracker binary to install")
	f.StringVar(&o.jailer, "jailer", "", "path of a jailer binary to install alongside")
	f.BoolVar(&o.download, "download", false, "download firecracker "+artifacts.FirecrackerRelease+" from GitHub")
	f.StringVar(&o.releaseURL, "release-url", artifacts.FirecrackerReleaseURL,
		"base URL of the release assets, for --download")
	return cmd
}

func runSetupFirecracker(ctx context.Context, env *Env, o setupFirecrackerOpts) error {
	in, err := artifacts.InstallFirecracker(ctx, env.Dirs.Data, artifacts.FirecrackerSource{From: o.from, Jailer: o.jailer, Download: o.download, ReleaseURL: o.releaseURL})
	if err != nil {
		return err
	}
	v := in.Version
	fmt.Fprintf(env.Stdout, "installed firecracker %d.%d.%d to %s\n", v[0], v[1], v[2], in.Firecracker)
	if in.Jailer != "" {
		fmt.Fprintf(env.Stdout, "installed jailer to %s\n", in.Jailer)
	}
	return nil
}
