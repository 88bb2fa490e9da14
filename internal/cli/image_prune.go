package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/image"
)

type imagePruneOptions struct {
	all bool
}

func newImagePruneCmd(env *Env) *cobra.Command {
	var o imagePruneOptions
	cmd := &cobra.Command{
		Use:   "prune [flags]",
		Short: "Remove unused images",
		Long: `Remove images that have no name and no VM record naming them, and
whatever interrupted pulls left behind; -a removes every image no VM record
names. Prints the ID of each image removed. Nothing asks for confirmation:
-f is accepted for podman's muscle memory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runImagePrune(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.all, "all", "a", false, "remove every unused image, named or not")
	f.BoolP("force", "f", false, "do not ask (fcvm never asks)")
	return cmd
}

func runImagePrune(_ context.Context, env *Env, o imagePruneOptions) error {
	s, err := openImageStore(env)
	if err != nil {
		return err
	}
	var removed []image.Image
	if o.all {
		removed, err = s.PruneAll()
	} else {
		removed, err = s.Prune()
	}
	for _, img := range removed {
		fmt.Fprintln(env.Stdout, img.ID)
	}
	return err
}
