package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

// completeVMs completes VM names for the verbs that take them (cobra's
// completion command, `fcvm completion bash|zsh|fish`, calls it through
// the hidden __complete command).
func completeVMs(env *Env) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		recs, _ := env.engine().List()
		var names []string
		for _, r := range recs {
			if strings.HasPrefix(r.Name, prefix) {
				names = append(names, r.Name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
