package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/image"
)

type imageRmOptions struct {
	ignore bool
}

func newImageRmCmd(env *Env) *cobra.Command {
	var o imageRmOptions
	cmd := &cobra.Command{
		Use:     "rm [flags] IMAGE...",
		Aliases: []string{"rmi", "remove"},
		Short:   "Remove image names, and images left without one",
		Long: `Remove images by name or ID. Removing a name leaves the image while other
names point at it; removing the last name, or removing by ID, deletes the
image and its disk. An image that a VM record names is kept: remove the VM
first (fcvm rm). Prints "Untagged: NAME" and "Deleted: ID" lines as podman
does.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImageRm(cmd.Context(), env, o, args)
		},
	}
	cmd.Flags().BoolVarP(&o.ignore, "ignore", "i", false, "ignore images that do not exist")
	return cmd
}

func runImageRm(_ context.Context, env *Env, o imageRmOptions, refs []string) error {
	s, err := openImageStore(env)
	if err != nil {
		return err
	}
	var errs []error
	for _, ref := range refs {
		before, err := s.Lookup(ref)
		if err == nil {
			err = s.Remove(ref)
		}
		if err != nil {
			if o.ignore && errors.Is(err, image.ErrNotFound) {
				continue
			}
			errs = append(errs, err)
			continue
		}
		after, _ := s.Lookup(before.ID)
		for _, r := range before.Refs {
			if after == nil || !contains(after.Refs, r) {
				fmt.Fprintf(env.Stdout, "Untagged: %s\n", r)
			}
		}
		if after == nil {
			fmt.Fprintf(env.Stdout, "Deleted: %s\n", before.ID)
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
