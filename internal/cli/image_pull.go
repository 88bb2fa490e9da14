package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/image"
)

type imagePullOptions struct {
	tlsVerify bool
	quiet     bool
	platform  string
}

func newImagePullCmd(env *Env) *cobra.Command {
	var o imagePullOptions
	cmd := &cobra.Command{
		Use:   "pull [flags] IMAGE...",
		Short: "Pull images and cache each as a read-only disk",
		Long: `Pull images from a registry or a local file and cache each, by its
config digest, as a read-only ext4 disk that every VM of the image shares.
Prints each image's ID.

References follow podman: "busybox" is docker.io/library/busybox:latest;
docker://REF, oci:DIR[:REF], oci-archive:PATH[:REF],
docker-archive:PATH[:REF] and containers-storage:REF (the host's podman
images). Credentials come from $REGISTRY_AUTH_FILE,
$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json or
~/.docker/config.json. Progress goes to a terminal on stderr, never to a
pipe.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImagePull(cmd.Context(), env, o, args)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.tlsVerify, "tls-verify", true, "require HTTPS and a trusted certificate (false: plain HTTP or any certificate)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "no progress")
	f.StringVar(&o.platform, "platform", "", "os/arch to pull from a multi-platform image (default linux/<host arch>)")
	return cmd
}

func runImagePull(ctx context.Context, env *Env, o imagePullOptions, refs []string) error {
	s, err := openImageStore(env)
	if err != nil {
		return err
	}
	opts := image.PullOptions{TLSVerify: o.tlsVerify, Platform: o.platform}
	if !o.quiet {
		opts.Progress = terminalOrNil(env.Stderr)
	}
	for _, ref := range refs {
		img, err := s.Pull(ctx, ref, opts)
		if err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, img.ID)
	}
	return nil
}
