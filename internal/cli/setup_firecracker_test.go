package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/datadir"
)

// fakeBinary writes a script that answers --version as a release binary
// would.
func fakeBinary(t *testing.T, name, versionLine string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	script := "#!/bin/sh\nprintf '%s\\n\\n' '" + versionLine + "'\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func runSetupFC(t *testing.T, data string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &out, Dirs: datadir.Dirs{Data: data}}
	cmd := newSetupFirecrackerCmd(env)
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), err
}

func TestSetupFirecrackerFrom(t *testing.T) {
	data := t.TempDir()
	fc := fakeBinary(t, "firecracker-v1.12.1-x86_64", "Firecracker v1.12.1")
	jl := fakeBinary(t, "jailer-v1.12.1-x86_64", "Jailer v1.12.1")
	out, err := runSetupFC(t, data, "--from", fc, "--jailer", jl)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "installed firecracker 1.12.1") {
		t.Errorf("output %q", out)
	}
	for _, name := range []string{"firecracker", "jailer"} {
		st, err := os.Stat(filepath.Join(data, "bin", name))
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s installed: %v %v", name, st, err)
		}
	}
	got, _ := os.ReadFile(filepath.Join(data, "bin", "firecracker"))
	want, _ := os.ReadFile(fc)
	if !bytes.Equal(got, want) {
		t.Error("installed binary differs from the source")
	}
}

func TestSetupFirecrackerRefuses(t *testing.T) {
	data := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "--from PATH"},
		{"too old", []string{"--from", fakeBinary(t, "fc", "Firecracker v1.9.0")}, "needs 1.10 or newer"},
		{"not firecracker", []string{"--from", fakeBinary(t, "fc", "QEMU emulator version 7.2.0")}, "must name a firecracker binary"},
		{"missing", []string{"--from", "/nonexistent/firecracker"}, "must name a firecracker binary"},
		{"jailer mismatch", []string{"--from", fakeBinary(t, "fc", "Firecracker v1.12.1"), "--jailer", fakeBinary(t, "j", "Jailer v1.11.0")}, "different releases"},
		{"jailer is firecracker", []string{"--from", fakeBinary(t, "fc", "Firecracker v1.12.1"), "--jailer", fakeBinary(t, "j", "Firecracker v1.12.1")}, "must name a jailer binary"},
		{"download and from", []string{"--download", "--from", "/x"}, "do not combine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runSetupFC(t, data, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (%s), want an error saying %q", err, out, tc.want)
			}
			if _, err := os.Stat(filepath.Join(data, "bin", "firecracker")); !os.IsNotExist(err) {
				t.Error("installed something anyway")
			}
		})
	}
}
