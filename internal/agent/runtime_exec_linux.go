package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/fcvm/fcvm/internal/channel"
)

// The fast exec path: the agent asks the OCI runtime (crun) to run the
// command in the container directly, as podman exec itself does in the
// end, without paying for podman's start-up (about a second per exec under
// TCG). The process spec is the container's own (environment, working
// directory, user, capabilities, rlimits, no_new_privileges, seccomp and
// AppArmor come with the container), with the request's command,
// environment additions and working directory, which is what podman exec
// builds too. Requests that need more of podman (a terminal through
// conmon, --detach, a --user resolved against the container's passwd and
// group files) still go through podman exec.

// runtimeStateDir is crun's state: one dir per container, holding the
// config.json the container runs with.
const runtimeStateDir = "/run/crun"

// runtimeExecDir holds the process specs of running fast execs.
const runtimeExecDir = "/run/fcvm-exec"

// fastExecOK reports whether req can take the fast path.
func fastExecOK(req *channel.ExecRequest) bool {
	return !req.InVM && !req.TTY && !req.Detach && req.User == ""
}

// runtimeExecArgs returns crun's command line for req in the container
// whose ID is in cidFile, with marker in the command's environment, and
// the process spec file to remove once the command has exited. ok is false
// when the container's state cannot be read (the caller falls back to
// podman exec).
func runtimeExecArgs(req *channel.ExecRequest, marker string) (argv []string, spec string, ok bool) {
	b, err := os.ReadFile(cidFile)
	id := strings.TrimSpace(string(b))
	if err != nil || id == "" || strings.ContainsAny(id, "/.") {
		return nil, "", false
	}
	proc, err := execProcess(filepath.Join(runtimeStateDir, id, "config.json"), req, marker)
	if err != nil {
		return nil, "", false
	}
	if err := os.MkdirAll(runtimeExecDir, 0o700); err != nil {
		return nil, "", false
	}
	spec = filepath.Join(runtimeExecDir, marker+".json")
	if err := os.WriteFile(spec, proc, 0o600); err != nil {
		return nil, "", false
	}
	return []string{"crun", "exec", "--process", spec, id}, spec, true
}

// execProcess is the container's process spec from configPath with req's
// command, environment and working directory. Fields fcvm does not know
// are kept as they are.
func execProcess(configPath string, req *channel.ExecRequest, marker string) ([]byte, error) {
	b, err := os.ReadFile(configPath)
	if err != nil {
		return nil, err
	}
	var config struct {
		Process map[string]json.RawMessage `json:"process"`
	}
	if err := json.Unmarshal(b, &config); err != nil || config.Process == nil {
		return nil, fmt.Errorf("read %s: no process (%v)", configPath, err)
	}
	p := config.Process
	var env []string
	if raw, ok := p["env"]; ok {
		if err := json.Unmarshal(raw, &env); err != nil {
			return nil, fmt.Errorf("read %s: env: %w", configPath, err)
		}
	}
	env = mergeEnv(env, req.Env)
	env = append(env, markerVar+"="+marker)
	set := func(k string, v any) {
		b, _ := json.Marshal(v)
		p[k] = b
	}
	set("args", req.Cmd)
	set("env", env)
	set("terminal", false)
	delete(p, "consoleSize")
	if req.Workdir != "" {
		set("cwd", req.Workdir)
	}
	return json.Marshal(p)
}

// mergeEnv is base with each K=V of add replacing base's K, as podman exec
// --env does.
func mergeEnv(base, add []string) []string {
	out := append([]string(nil), base...)
	idx := map[string]int{}
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		idx[k] = i
	}
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// runtimeFailure recognises crun's own report that the command could not
// start (exit 255 and its message last on stderr) and gives podman's exit
// code for it: 127 not found, 126 not executable.
var (
	notFoundRE   = regexp.MustCompile("executable file `[^`]*` not found in \\$PATH: No such file or directory\\s*$")
	notExecRE    = regexp.MustCompile("(open executable|exec `[^`]*`): Permission denied\\s*$")
	crunStartErr = 255
)

func runtimeFailure(code int, stderrTail []byte) (int, bool) {
	if code != crunStartErr {
		return 0, false
	}
	switch {
	case notFoundRE.Match(stderrTail):
		return 127, true
	case notExecRE.Match(stderrTail):
		return 126, true
	}
	return 0, false
}

// tailWriter keeps the last bytes written to it.
type tailWriter struct {
	mu  sync.Mutex // guards buf
	buf []byte
}

const tailKeep = 512

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailKeep {
		t.buf = t.buf[len(t.buf)-tailKeep:]
	}
	return len(p), nil
}

func (t *tailWriter) tail() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.buf)
}
