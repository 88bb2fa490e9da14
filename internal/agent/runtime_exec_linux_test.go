package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fcvm/fcvm/internal/channel"
)

// TestExecProcess: the fast path runs the container's own process spec
// with the request's command, environment and working directory, and
// keeps every field it does not set (capabilities, rlimits, ...).
func TestExecProcess(t *testing.T) {
	config := `{"ociVersion":"1.0.2","process":{"terminal":true,"consoleSize":{"height":24,"width":80},
		"user":{"uid":0,"gid":0,"additionalGids":[10]},"args":["sleep","1000"],
		"env":["PATH=/usr/bin:/bin","HOSTNAME=abc","FOO=old"],"cwd":"/srv",
		"capabilities":{"bounding":["CAP_CHOWN"],"effective":["CAP_CHOWN"]},
		"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],"noNewPrivileges":true,"x-unknown":{"a":1}},
		"root":{"path":"/x"}}`
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := execProcess(path, t.TempDir(), &channel.ExecRequest{Cmd: []string{"sh", "-c", "env"}, Env: []string{"FOO=new", "BAR=1"}, Workdir: "/tmp"}, "m1")
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	strs := func(k string) []string {
		var out []string
		for _, v := range p[k].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	if got := strs("args"); !slices.Equal(got, []string{"sh", "-c", "env"}) {
		t.Errorf("args %q", got)
	}
	if got, want := strs("env"), []string{"PATH=/usr/bin:/bin", "HOSTNAME=abc", "FOO=new", "BAR=1", markerVar + "=m1"}; !slices.Equal(got, want) {
		t.Errorf("env %q, want %q", got, want)
	}
	if p["cwd"] != "/tmp" || p["terminal"] != false || p["consoleSize"] != nil {
		t.Errorf("cwd %v terminal %v consoleSize %v", p["cwd"], p["terminal"], p["consoleSize"])
	}
	for _, k := range []string{"user", "capabilities", "rlimits", "noNewPrivileges", "x-unknown"} {
		if p[k] == nil {
			t.Errorf("%s dropped from the container's process", k)
		}
	}
	// Without a workdir the container's stays.
	b, _ = execProcess(path, t.TempDir(), &channel.ExecRequest{Cmd: []string{"true"}}, "m2")
	json.Unmarshal(b, &p)
	if p["cwd"] != "/srv" {
		t.Errorf("cwd %v, want the container's /srv", p["cwd"])
	}
	// -u: the user and groups from the container's files, podman's
	// capabilities for them, their HOME; -t: a terminal of the size asked.
	b, err = execProcess(path, fixtureRoot(t), &channel.ExecRequest{Cmd: []string{"id"}, User: "app", TTY: true, Rows: 30, Cols: 100}, "m4")
	if err != nil {
		t.Fatal(err)
	}
	var up struct {
		User         specs.User
		Capabilities specs.LinuxCapabilities
		Env          []string
		Terminal     bool
		ConsoleSize  *specs.Box
	}
	json.Unmarshal(b, &up)
	if up.User.UID != 1000 || up.User.GID != 1000 || !slices.Equal(up.User.AdditionalGids, []uint32{10, 29}) {
		t.Errorf("user %+v", up.User)
	}
	if !slices.Equal(up.Capabilities.Bounding, []string{"CAP_CHOWN"}) || len(up.Capabilities.Effective) != 0 {
		t.Errorf("capabilities %+v", up.Capabilities)
	}
	if !slices.Contains(up.Env, "HOME=/home/app") || !up.Terminal || up.ConsoleSize == nil || up.ConsoleSize.Height != 30 || up.ConsoleSize.Width != 100 {
		t.Errorf("env %q terminal %v size %+v", up.Env, up.Terminal, up.ConsoleSize)
	}
	if _, err := execProcess(path, fixtureRoot(t), &channel.ExecRequest{Cmd: []string{"id"}, User: "nosuch"}, "m5"); err == nil {
		t.Error("an unknown user ran")
	}
	if _, err := execProcess(filepath.Join(t.TempDir(), "none.json"), t.TempDir(), &channel.ExecRequest{Cmd: []string{"true"}}, "m3"); err == nil {
		t.Error("a missing config gave a process")
	}
}

func TestRuntimeFailure(t *testing.T) {
	for _, tc := range []struct {
		code int
		tail string
		want int
		ok   bool
	}{
		{255, "executable file `nosuch` not found in $PATH: No such file or directory", 127, true},
		{255, "some output\nexecutable file `x y` not found in $PATH: No such file or directory\n", 127, true},
		{255, "open executable: Permission denied", 126, true},
		{1, "open executable: Operation not permitted\n", 126, true},
		{1, "executable file `nosuch` not found in $PATH: No such file or directory\n", 127, true},
		{255, "the command's own error", 0, false},
		{2, "executable file `nosuch` not found in $PATH: No such file or directory", 0, false},
		// The message must be the last thing on stderr.
		{255, "executable file `x` not found in $PATH: No such file or directory\nthen the command went on", 0, false},
	} {
		got, ok := runtimeFailure(tc.code, []byte(tc.tail))
		if got != tc.want || ok != tc.ok {
			t.Errorf("runtimeFailure(%d, %q) = %d, %v; want %d, %v", tc.code, tc.tail, got, ok, tc.want, tc.ok)
		}
	}
}
