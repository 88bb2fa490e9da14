package cli

import "github.com/spf13/cobra"

func newImageCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Pull, list and remove container images",
	}
	cmd.AddCommand(
		// one constructor per subcommand, each in its own image_*.go file
		newImageLsCmd(env),
		newImagePruneCmd(env),
		newImagePullCmd(env),
		newImageRmCmd(env),
	)
	return cmd
}
