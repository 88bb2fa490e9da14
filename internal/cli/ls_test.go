package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/state"
)

var lsNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func testID(c byte) string { return strings.Repeat(string(c), 64) }

// fixture makes a store with one VM in each interesting state and returns
// an Env writing to buffers.
func fixture(t *testing.T) (*Env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	dirs := datadir.Dirs{Data: t.TempDir(), Runtime: t.TempDir()}
	st, err := state.Open(dirs.VMs())
	if err != nil {
		t.Fatal(err)
	}
	seven := 7
	dead := state.Process{PID: os.Getpid(), StartTime: state.Self().StartTime + 1}
	for _, r := range []*state.Record{
		{ID: testID('a'), Name: "web", Image: "nginx:alpine", Cmd: []string{"nginx", "-g", "daemon off; pid /tmp/n.pid;"},
			Created: lsNow.Add(-5 * time.Minute), Started: lsNow.Add(-3 * time.Minute),
			Status: state.StatusRunning, Supervisor: state.Self(), VMM: state.Self(), Driver: "qemu",
			Network: state.Network{Mode: "bridged", GuestIP: "10.0.0.2", Ports: []state.Port{
				{HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"},
				{HostPort: 5353, GuestPort: 53, Proto: "udp"}}},
			Health: "healthy", Labels: map[string]string{"app": "web"}},
		{ID: testID('b'), Name: "job", Image: "busybox", Cmd: []string{"sh", "-c", "exit 7"},
			Created: lsNow.Add(-time.Hour), Started: lsNow.Add(-time.Hour), Finished: lsNow.Add(-2 * time.Second),
			Status: state.StatusExited, ExitCode: &seven, Driver: "qemu"},
		{ID: testID('c'), Name: "ghost", Image: "busybox", Cmd: []string{"sleep", "1000"},
			Created: lsNow.Add(-48 * time.Hour), Status: state.StatusRunning, Supervisor: dead, Driver: "qemu"},
		{ID: testID('d'), Name: "fresh", Image: "alpine", Created: lsNow.Add(-1500 * time.Millisecond), Status: state.StatusCreated},
		{ID: testID('e'), Name: "clone1", Image: "nginx:alpine", Cmd: []string{"nginx"},
			Created: lsNow.Add(-90 * time.Second), Started: lsNow.Add(-61 * time.Second),
			Status: state.StatusRunning, Supervisor: state.Self(), Snapshot: "warm", ServePID: 4242},
	} {
		if err := st.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	return &Env{Stdout: &stdout, Stderr: &stderr, Dirs: dirs}, &stdout, &stderr
}

func TestLsTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    lsOptions
		want string
	}{
		{"running", lsOptions{}, `
CONTAINER ID  IMAGE         COMMAND               CREATED             STATUS             HEALTH   PORTS                                         SNAPSHOT  NAMES
cccccccccccc  busybox       sleep 1000            2 days ago          Dead                                                                                ghost
aaaaaaaaaaaa  nginx:alpine  nginx -g daemon o...  5 minutes ago       Up 3 minutes       healthy  127.0.0.1:8080->80/tcp, 0.0.0.0:5353->53/udp            web
eeeeeeeeeeee  nginx:alpine  nginx                 About a minute ago  Up About a minute                                                         warm      clone1
`},
		{"all", lsOptions{all: true}, `
CONTAINER ID  IMAGE         COMMAND               CREATED             STATUS                    HEALTH   PORTS                                         SNAPSHOT  NAMES
cccccccccccc  busybox       sleep 1000            2 days ago          Dead                                                                                       ghost
bbbbbbbbbbbb  busybox       sh -c exit 7          About an hour ago   Exited (7) 2 seconds ago                                                                   job
aaaaaaaaaaaa  nginx:alpine  nginx -g daemon o...  5 minutes ago       Up 3 minutes              healthy  127.0.0.1:8080->80/tcp, 0.0.0.0:5353->53/udp            web
eeeeeeeeeeee  nginx:alpine  nginx                 About a minute ago  Up About a minute                                                                warm      clone1
dddddddddddd  alpine                              1 second ago        Created                                                                                    fresh
`},
		{"quiet", lsOptions{all: true, quiet: true}, `
cccccccccccc
bbbbbbbbbbbb
aaaaaaaaaaaa
eeeeeeeeeeee
dddddddddddd
`},
		{"format", lsOptions{format: "{{.Names}} {{.Status}}"}, `
ghost Dead
web Up 3 minutes
clone1 Up About a minute
`},
		{"filter", lsOptions{filters: []string{"status=exited", "status=created"}, format: "{{.Names}}"}, `
job
fresh
`},
		{"filter-and", lsOptions{filters: []string{"name=^(web|clone1|job)$", "label=app=web"}, format: "{{.Names}}"}, `
web
`},
		{"filter-label-key", lsOptions{all: true, filters: []string{"label=app", "id=aaa"}, format: "{{.Names}}"}, `
web
`},
		{"filter-snapshot", lsOptions{filters: []string{"snapshot=warm"}, format: "{{.Names}}"}, `
clone1
`},
		{"no-trunc", lsOptions{noTrunc: true, format: "{{.ID}} {{.Command}}"}, `
` + testID('c') + ` sleep 1000
` + testID('a') + ` nginx -g daemon off; pid /tmp/n.pid;
` + testID('e') + ` nginx
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, stdout, stderr := fixture(t)
			tc.o.now = lsNow
			if err := runLs(context.Background(), env, tc.o); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want[1:], stdout.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if stderr.Len() != 0 {
				t.Errorf("stderr: %s", stderr)
			}
		})
	}
}

func TestLsPlainColumns(t *testing.T) {
	// No health and no clones: no HEALTH or SNAPSHOT column.
	dirs := datadir.Dirs{Data: t.TempDir()}
	st, _ := state.Open(dirs.VMs())
	if err := st.Create(&state.Record{ID: testID('f'), Name: "solo", Image: "busybox", Cmd: []string{"true"},
		Created: lsNow.Add(-10 * time.Second), Status: state.StatusRunning, Supervisor: state.Self()}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runLs(context.Background(), &Env{Stdout: &out, Dirs: dirs}, lsOptions{now: lsNow}); err != nil {
		t.Fatal(err)
	}
	want := `CONTAINER ID  IMAGE    COMMAND  CREATED         STATUS         PORTS  NAMES
ffffffffffff  busybox  true     10 seconds ago  Up 10 seconds         solo
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

func TestLsJSON(t *testing.T) {
	env, stdout, _ := fixture(t)
	if err := runLs(context.Background(), env, lsOptions{all: true, json: true, now: lsNow}); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("ls --json is not JSON: %v\n%s", err, stdout)
	}
	if len(got) != 5 {
		t.Fatalf("%d entries, want 5", len(got))
	}
	keys := []string{"command", "created", "driver", "error", "exit_code", "finished", "health", "id", "image", "image_id",
		"labels", "name", "network", "pid", "ports", "serve_pid", "snapshot", "started", "status", "vmm_pid"}
	for _, e := range got {
		var have []string
		for k := range e {
			have = append(have, k)
		}
		if diff := cmp.Diff(keys, have, cmpSortStrings); diff != "" {
			t.Errorf("keys of %v (-want +got):\n%s", e["name"], diff)
		}
	}
	byName := map[string]map[string]any{}
	for _, e := range got {
		byName[e["name"].(string)] = e
	}
	for name, want := range map[string]map[string]any{
		"ghost": {"status": "dead", "exit_code": nil, "finished": nil, "labels": map[string]any{}, "ports": []any{}},
		"job":   {"status": "exited", "exit_code": 7.0, "finished": "2025-06-01T11:59:58Z", "command": []any{"sh", "-c", "exit 7"}},
		"web": {"status": "running", "health": "healthy", "pid": float64(os.Getpid()), "vmm_pid": float64(os.Getpid()),
			"network": map[string]any{"mode": "bridged", "host_ip": "", "guest_ip": "10.0.0.2"},
			"ports": []any{
				map[string]any{"host_ip": "127.0.0.1", "host_port": 8080.0, "guest_port": 80.0, "proto": "tcp"},
				map[string]any{"host_ip": "", "host_port": 5353.0, "guest_port": 53.0, "proto": "udp"}}},
		"clone1": {"snapshot": "warm", "serve_pid": 4242.0, "started": "2025-06-01T11:58:59Z"},
		"fresh":  {"status": "created", "command": []any{}, "started": nil},
	} {
		for k, v := range want {
			if diff := cmp.Diff(v, byName[name][k]); diff != "" {
				t.Errorf("%s.%s (-want +got):\n%s", name, k, diff)
			}
		}
	}
}

var cmpSortStrings = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestLsCorruptRecord(t *testing.T) {
	env, stdout, stderr := fixture(t)
	bad := testID('9')
	os.MkdirAll(env.Dirs.VMs()+"/"+bad, 0o700)
	os.WriteFile(env.Dirs.VMs()+"/"+bad+"/record.json", []byte("{garbage"), 0o600)
	if err := runLs(context.Background(), env, lsOptions{all: true, quiet: true, now: lsNow}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(stdout.String(), "\n"); n != 5 {
		t.Errorf("listed %d VMs, want the 5 good ones:\n%s", n, stdout)
	}
	if !strings.Contains(stderr.String(), "warning: skipping read VM record "+bad) {
		t.Errorf("stderr = %q, want a warning naming %s", stderr, bad)
	}
}

// TestLsCommand goes through the real command line: flag parsing, the ps
// alias and the data dir from the environment.
func TestLsCommand(t *testing.T) {
	env, _, _ := fixture(t)
	t.Setenv("FCVM_DATA_DIR", env.Dirs.Data)
	t.Setenv("FCVM_RUNTIME_DIR", env.Dirs.Runtime)
	for _, args := range [][]string{{"ls", "-q"}, {"ps", "--quiet"}} {
		var stdout, stderr bytes.Buffer
		if code := Run(context.Background(), args, nil, &stdout, &stderr); code != 0 {
			t.Fatalf("fcvm %v: exit %d: %s", args, code, stderr.String())
		}
		if want := "cccccccccccc\naaaaaaaaaaaa\neeeeeeeeeeee\n"; stdout.String() != want {
			t.Errorf("fcvm %v = %q, want %q", args, stdout.String(), want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := Run(context.Background(), []string{"ls", "--format", "{{.Nope}}"}, nil, &stdout, &stderr); code == 0 {
		t.Errorf("bad --format succeeded")
	}
}

func TestLsBadFilter(t *testing.T) {
	env, _, _ := fixture(t)
	for _, f := range []string{"status", "status=zombie", "colour=red", "name=("} {
		if err := runLs(context.Background(), env, lsOptions{filters: []string{f}}); err == nil || !strings.Contains(err.Error(), "--filter") {
			t.Errorf("--filter %s: %v, want an error about --filter", f, err)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                      "Less than a second",
		999 * time.Millisecond: "Less than a second",
		time.Second:            "1 second",
		59 * time.Second:       "59 seconds",
		60 * time.Second:       "About a minute",
		119 * time.Second:      "About a minute",
		2 * time.Minute:        "2 minutes",
		59 * time.Minute:       "59 minutes",
		60 * time.Minute:       "About an hour",
		47 * time.Hour:         "47 hours",
		48 * time.Hour:         "2 days",
		15 * 24 * time.Hour:    "2 weeks",
		90 * 24 * time.Hour:    "3 months",
		800 * 24 * time.Hour:   "2 years",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// BenchmarkLsBinary100 runs the real fcvm binary (built once) as fcvm ls -a
// over 100 records, half of them running: the spec's target is under 50 ms
// per run, process start included.
func BenchmarkLsBinary100(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "fcvm")
	build := exec.Command("go", "build", "-o", bin, "github.com/fcvm/fcvm/cmd/fcvm")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build fcvm: %v\n%s", err, out)
	}
	dirs := datadir.Dirs{Data: b.TempDir(), Runtime: b.TempDir()}
	st, err := state.Open(dirs.VMs())
	if err != nil {
		b.Fatal(err)
	}
	sup := exec.Command("sleep", "3600")
	if err := sup.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sup.Process.Kill(); sup.Wait() })
	live, err := state.ProcessOf(sup.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	zero := 0
	for i := range 100 {
		r := &state.Record{Image: "docker.io/library/nginx:alpine", Cmd: []string{"nginx", "-g", "daemon off;"},
			Driver: "qemu", CPUs: 1, MemoryMiB: 256, Created: time.Now().Add(-time.Duration(i) * time.Minute),
			Status: state.StatusRunning, Supervisor: live, VMM: live,
			Network: state.Network{Mode: "bridged", Ports: []state.Port{{HostIP: "127.0.0.1", HostPort: 8000 + i, GuestPort: 80, Proto: "tcp"}}},
			Labels:  map[string]string{"app": "web"}}
		if i%2 == 1 {
			r.Status, r.ExitCode, r.Finished = state.StatusExited, &zero, time.Now()
		}
		if err := st.Create(r); err != nil {
			b.Fatal(err)
		}
	}
	env := append(os.Environ(), "FCVM_DATA_DIR="+dirs.Data, "FCVM_RUNTIME_DIR="+dirs.Runtime)
	b.ResetTimer()
	for b.Loop() {
		cmd := exec.Command(bin, "ls", "-a")
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil || bytes.Count(out, []byte("\n")) != 101 {
			b.Fatalf("fcvm ls -a: %v\n%s", err, out)
		}
	}
}
