package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestDoctorJSONAndTable(t *testing.T) {
	t.Setenv("FCVM_DATA_DIR", t.TempDir())
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"doctor", "--json"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("doctor --json exited %d: %s", code, errb.String())
	}
	var r struct {
		Checks []struct {
			Name      string `json:"name"`
			OK        bool   `json:"ok"`
			Detail    string `json:"detail"`
			Fix       string `json:"fix"`
			NeededFor string `json:"needed_for"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out.String())
	}
	if len(r.Checks) < 10 {
		t.Fatalf("only %d checks", len(r.Checks))
	}
	var artifacts bool
	for _, c := range r.Checks {
		if c.Name == "guest-artifacts" {
			artifacts = true
			if c.OK || c.Fix != "fcvm setup" {
				t.Errorf("guest-artifacts in an empty data dir: %+v", c)
			}
		}
	}
	if !artifacts {
		t.Error("no guest-artifacts check")
	}

	out.Reset()
	if code := Run(context.Background(), []string{"doctor"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("doctor exited %d: %s", code, errb.String())
	}
	for _, want := range []string{"CHECK", "STATUS", "guest-artifacts", "MISSING", "To fix:", "fcvm setup"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSetupBadKernel(t *testing.T) {
	t.Setenv("FCVM_DATA_DIR", t.TempDir())
	t.Setenv("FCVM_AGENT", "/nonexistent/fc-agent")
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"setup", "--kernel", "/nonexistent/vmlinux"}, strings.NewReader(""), &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "fcvm: setup:") || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
		t.Errorf("exit %d, stderr %q: want a one-line error", code, errb.String())
	}
}
