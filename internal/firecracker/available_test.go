package firecracker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/vmm"
)

func TestAvailable(t *testing.T) {
	kvm := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(kvm, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(standinEnv, "api")
	for _, tc := range []struct {
		name    string
		opts    Options
		version string
		want    []string // substrings of the error, in order; nil means available
	}{
		{"all there", Options{Binary: os.Args[0], KVMDevice: kvm}, "1.12.1", nil},
		{"no kvm", Options{Binary: os.Args[0], KVMDevice: "/nonexistent/kvm"}, "1.12.1",
			[]string{"no /nonexistent/kvm", "enable virtualization", "--vmm qemu"}},
		{"no binary", Options{Binary: "/nonexistent/firecracker", DataDir: "/data", KVMDevice: kvm}, "",
			[]string{"no firecracker binary on PATH or at /data/bin/firecracker", "fcvm setup firecracker --from", "--vmm qemu"}},
		{"too old", Options{Binary: os.Args[0], KVMDevice: kvm}, "1.9.1",
			[]string{"version 1.9.1, too old", "needs 1.10 or newer"}},
		{"no jailer", Options{Binary: os.Args[0], KVMDevice: kvm, Jailer: &JailerOptions{Binary: "/nonexistent/jailer"}}, "1.12.1",
			[]string{"jailer requested but no jailer binary at /nonexistent/jailer", "--jailer"}},
		{"jailer is not a jailer", Options{Binary: os.Args[0], KVMDevice: kvm, Jailer: &JailerOptions{Binary: os.Args[0]}}, "1.12.1",
			[]string{"is not a working jailer", "is not jailer's answer"}},
		{"everything missing", Options{Binary: "/nonexistent/firecracker", KVMDevice: "/nonexistent/kvm", Jailer: &JailerOptions{Binary: "/nonexistent/jailer"}}, "",
			[]string{"no /nonexistent/kvm", "no firecracker binary", "jailer requested", "--vmm qemu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("FCVM_TEST_VERSION", tc.version)
			err := New(tc.opts).Available()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unavailable: %v", err)
				}
				return
			}
			if !errors.Is(err, vmm.ErrUnavailable) {
				t.Fatalf("error %v does not wrap vmm.ErrUnavailable", err)
			}
			msg := err.Error()
			at := 0
			for _, w := range tc.want {
				i := strings.Index(msg[at:], w)
				if i < 0 {
					t.Fatalf("error lacks %q (in order):\n%s", w, msg)
				}
				at += i
			}
			t.Log(msg)
		})
	}
}

func TestKVMPermissionMessage(t *testing.T) {
	// Root opens any device node, so the permission case is checked on a
	// file root cannot open for writing: a directory.
	dir := t.TempDir()
	err := New(Options{Binary: "/nonexistent/fc", KVMDevice: dir}).Available()
	if err == nil || !strings.Contains(err.Error(), "cannot open "+dir) {
		t.Fatalf("got %v", err)
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string][3]int{
		"v1.12.1": {1, 12, 1}, "1.10.0": {1, 10, 0}, "1.17.0-dev": {1, 17, 0}, "v2.0": {2, 0, 0},
	} {
		got, err := ParseVersion(in)
		if err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "v", "1", "1.x.0", "1.2.3.4", "-1.2.3"} {
		if _, err := ParseVersion(in); err == nil {
			t.Errorf("ParseVersion(%q) accepted", in)
		}
	}
	if !older([3]int{1, 9, 9}, MinVersion) || older([3]int{1, 10, 0}, MinVersion) || older([3]int{2, 0, 0}, MinVersion) {
		t.Error("older is wrong")
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"v1.12.1", "1.17.0-dev", "", "1..2", "v9999999999999999999.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		for _, n := range v {
			if n < 0 {
				t.Fatalf("ParseVersion(%q) = %v", s, v)
			}
		}
	})
}
