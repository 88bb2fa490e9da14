package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	env, stdout, _ := fixture(t)
	if err := runInspect(context.Background(), env, inspectOptions{names: []string{"web", "ccc", testID('b')}}); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("inspect output is not JSON: %v\n%s", err, stdout)
	}
	if len(got) != 3 {
		t.Fatalf("%d entries, want 3:\n%s", len(got), stdout)
	}
	for i, want := range []string{"web", "ghost", "job"} {
		if got[i]["Name"] != want || got[i]["Id"] == "" {
			t.Errorf("entry %d: Name %v Id %v, want %s", i, got[i]["Name"], got[i]["Id"], want)
		}
	}
	if st := got[0]["State"].(map[string]any); st["Status"] != "running" || st["Running"] != true || st["Pid"].(float64) != float64(os.Getpid()) {
		t.Errorf("web State: %v", st)
	}
	if st := got[1]["State"].(map[string]any); st["Status"] != "exited" || st["Dead"] != true || st["Running"] != false {
		t.Errorf("ghost State: %v", st)
	}
	if st := got[2]["State"].(map[string]any); st["ExitCode"] != 7.0 || st["Status"] != "exited" {
		t.Errorf("job State: %v", st)
	}
	web, ghost, job := got[0]["Fcvm"].(map[string]any), got[1]["Fcvm"].(map[string]any), got[2]["Fcvm"].(map[string]any)
	if web["name"] != "web" || web["status"] != "running" || web["recorded_status"] != nil {
		t.Errorf("web: name %v status %v recorded_status %v", web["name"], web["status"], web["recorded_status"])
	}
	// web's VMM is this test process: its memory is real.
	mem, _ := web["memory"].(map[string]any)
	if rss, _ := mem["rss_kib"].(float64); rss == 0 {
		t.Errorf("web memory = %v, want rss_kib and pss_kib", web["memory"])
	}
	if pss, _ := mem["pss_kib"].(float64); pss == 0 || pss > mem["rss_kib"].(float64) {
		t.Errorf("web memory = %v, want 0 < pss_kib <= rss_kib", web["memory"])
	}
	for _, k := range []string{"id", "image", "cmd", "created", "supervisor", "vmm", "dir", "network", "labels", "health"} {
		if _, ok := web[k]; !ok {
			t.Errorf("web has no %q", k)
		}
	}
	if ghost["status"] != "dead" || ghost["recorded_status"] != "running" || ghost["memory"] != nil {
		t.Errorf("ghost: status %v recorded_status %v memory %v", ghost["status"], ghost["recorded_status"], ghost["memory"])
	}
	if job["exit_code"] != 7.0 || job["status"] != "exited" {
		t.Errorf("job: status %v exit_code %v", job["status"], job["exit_code"])
	}
}

func TestInspectNotFound(t *testing.T) {
	env, _, _ := fixture(t)
	t.Setenv("FCVM_DATA_DIR", env.Dirs.Data)
	t.Setenv("FCVM_RUNTIME_DIR", env.Dirs.Runtime)
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"inspect", "web", "nope"}, nil, &stdout, &stderr)
	if code == 0 {
		t.Fatal("inspect of an unknown VM succeeded")
	}
	if got := stderr.String(); got != "fcvm: no such VM: nope\n" {
		t.Errorf("stderr = %q, want %q", got, "fcvm: no such VM: nope\n")
	}
	var got []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || len(got) != 1 || got[0]["Name"] != "web" {
		t.Errorf("stdout = %s, want web's record (like podman, what was found is printed)", stdout.String())
	}
	// Ambiguous prefixes say so.
	stdout.Reset()
	stderr.Reset()
	os.MkdirAll(env.Dirs.VMs(), 0o700)
	if code := Run(context.Background(), []string{"inspect", "x"}, nil, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "no such VM: x") {
		t.Errorf("inspect x: exit %d, stderr %q", code, stderr.String())
	}
}

func TestInspectFormat(t *testing.T) {
	env, stdout, _ := fixture(t)
	o := inspectOptions{names: []string{"web", "ghost"}, format: "{{.Name}} {{.Fcvm.Status}} {{.Fcvm.Network.GuestIP}} {{.State.Pid}}"}
	if err := runInspect(context.Background(), env, o); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("web running 10.0.0.2 %d\nghost dead  0\n", os.Getpid())
	if stdout.String() != want {
		t.Errorf("inspect --format = %q, want %q", stdout.String(), want)
	}
	if err := runInspect(context.Background(), env, inspectOptions{names: []string{"web"}, format: "{{"}); err == nil {
		t.Error("bad --format succeeded")
	}
}
