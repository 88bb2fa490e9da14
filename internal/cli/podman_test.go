package cli

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestPodmanAliases: each `fcvm podman VERB` is `fcvm VERB`, with the same
// flags, and an unknown verb is a one-line error with podman's code.
func TestPodmanAliases(t *testing.T) {
	env := &Env{}
	top := map[string][]string{}
	for _, c := range commands(env) {
		top[c.Name()] = flagNames(c.Flags())
	}
	subs := newPodmanCmd(env).Commands()
	if len(subs) < 10 {
		t.Fatalf("fcvm podman has %d verbs", len(subs))
	}
	for _, c := range subs {
		want, ok := top[c.Name()]
		if !ok {
			t.Errorf("fcvm podman %s has no fcvm %s", c.Name(), c.Name())
			continue
		}
		if got := flagNames(c.Flags()); !slices.Equal(got, want) {
			t.Errorf("fcvm podman %s flags %v, fcvm %s flags %v", c.Name(), got, c.Name(), want)
		}
	}
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"podman", "nosuch"}, nil, &out, &errOut); code != 125 || strings.Count(errOut.String(), "\n") != 1 || out.Len() != 0 {
		t.Errorf("fcvm podman nosuch: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

func flagNames(fs *pflag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name+"/"+f.Shorthand) })
	slices.Sort(names)
	return names
}
