package agent

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fcvm/fcvm/internal/channel"
)

// Exec in the container: the agent asks crun to run the command in the
// container directly, as podman exec itself does in the end, without
// podman's start-up (about a second per exec under TCG). The process spec
// is the container's own (environment, working directory, user,
// capabilities, rlimits, no_new_privileges, seccomp), with the request's
// command, environment additions, working directory, user and terminal,
// which is what podman exec builds too.

// runtimeStateDir is crun's state: one dir per container, holding the
// config.json the container runs with.
const runtimeStateDir = "/run/crun"

// runtimeExecDir holds the process specs of running execs.
const runtimeExecDir = "/run/fcvm-exec"

// runtimeExecArgs returns crun's command line for req in the container
// with the process spec proc (execProcess), and the process spec file to
// remove once the command has exited.
func runtimeExecArgs(req *channel.ExecRequest, proc []byte, marker, name string) (argv []string, spec string, err error) {
	if err := os.MkdirAll(runtimeExecDir, 0o700); err != nil {
		return nil, "", err
	}
	spec = filepath.Join(runtimeExecDir, marker+".json")
	if err := os.WriteFile(spec, proc, 0o600); err != nil {
		return nil, "", err
	}
	argv = []string{"crun", "exec", "--process", spec}
	if req.Detach {
		argv = append(argv, "--detach")
	}
	return append(argv, name), spec, nil
}

// execProcess is the container's process spec from configPath with req's
// command, environment, working directory, terminal and user (resolved
// against the container's files under root). Fields fcvm does not know
// are kept as they are.
func execProcess(configPath, root string, req *channel.ExecRequest, marker string) ([]byte, error) {
	b, err := os.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("read the container's state: %w", err)
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
	set := func(k string, v any) {
		b, _ := json.Marshal(v)
		p[k] = b
	}
	if req.User != "" {
		u, err := resolveUser(root, req.User)
		if err != nil {
			return nil, err
		}
		var caps specs.LinuxCapabilities
		if raw, ok := p["capabilities"]; ok {
			if err := json.Unmarshal(raw, &caps); err != nil {
				return nil, fmt.Errorf("read %s: capabilities: %w", configPath, err)
			}
		}
		set("user", processUser(u))
		set("capabilities", processCaps(caps.Bounding, u.Uid))
		// podman exec gives the user's HOME, unless -e sets one.
		env = mergeEnv(env, []string{"HOME=" + cmp.Or(u.Home, "/")})
	}
	env = mergeEnv(env, req.Env)
	env = append(env, markerVar+"="+marker)
	set("args", req.Cmd)
	set("env", env)
	set("terminal", req.TTY)
	delete(p, "consoleSize")
	if req.TTY {
		set("consoleSize", specs.Box{Height: uint(req.Rows), Width: uint(req.Cols)})
	}
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
// start (exit 1 from crun run, 255 from crun exec, and its message last on
// stderr) and gives podman's exit code for it: 127 not found, 126 not
// executable.
var (
	notFoundRE = regexp.MustCompile("executable file `[^`]*` not found in \\$PATH: No such file or directory\\s*$")
	notExecRE  = regexp.MustCompile("(open executable|exec `[^`]*`): (Permission denied|Operation not permitted)\\s*$")
)

func runtimeFailure(code int, stderrTail []byte) (int, bool) {
	if code != 1 && code != 255 {
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
