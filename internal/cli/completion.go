package cli

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Shell completion is cobra's: `fcvm completion bash|zsh|fish` prints the
// script, which calls the hidden __complete command; VM names complete
// for the verbs that take them.

// vmVerbs take VM names as every argument; vmFirstVerbs as the first.
var (
	vmVerbs      = []string{"attach", "inspect", "kill", "pause", "restart", "rm", "start", "stats", "stop", "unpause", "wait"}
	vmFirstVerbs = []string{"exec", "logs", "port", "rename", "top"}
)

// addVMCompletion gives the verbs among cmds that take VM names a
// completion of them.
func addVMCompletion(env *Env, cmds []*cobra.Command) {
	for _, c := range cmds {
		if c.ValidArgsFunction != nil {
			continue
		}
		switch name := c.Name(); {
		case slices.Contains(vmVerbs, name):
			c.ValidArgsFunction = completeVMs(env)
		case slices.Contains(vmFirstVerbs, name):
			all := completeVMs(env)
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveDefault
				}
				return all(cmd, args, prefix)
			}
		}
	}
}

// completeVMs completes VM names.
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
