package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCompletion: the scripts for bash, zsh and fish, and VM names where
// a verb takes them (the scripts call __complete).
func TestCompletion(t *testing.T) {
	env, _, _ := fixture(t)
	t.Setenv("FCVM_DATA_DIR", env.Dirs.Data)
	t.Setenv("FCVM_RUNTIME_DIR", env.Dirs.Runtime)
	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := Run(context.Background(), args, nil, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		return stdout.String()
	}
	for shell, has := range map[string]string{"bash": "complete -o default -F __start_fcvm fcvm", "zsh": "#compdef fcvm", "fish": "complete -c fcvm"} {
		if out := run("completion", shell); !strings.Contains(out, has) {
			t.Errorf("completion %s lacks %q", shell, has)
		}
	}
	for _, args := range [][]string{{"__complete", "stop", "w"}, {"__complete", "podman", "start", "w"}, {"__complete", "exec", "w"}} {
		if out := run(args...); !strings.HasPrefix(out, "web\n") || strings.Contains(out, "job") {
			t.Errorf("%v: %q, want web only", args, out)
		}
	}
	if out := run("__complete", "exec", "web", ""); strings.Contains(out, "web") {
		t.Errorf("exec completes VM names after the VM: %q", out)
	}
}
