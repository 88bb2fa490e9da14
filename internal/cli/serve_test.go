package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestServeAPIKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	os.WriteFile(file, []byte("from-file\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	for _, tc := range []struct {
		name     string
		o        serveOptions
		want     string
		errMatch string
	}{
		{"file wins", serveOptions{keyFile: file, apiKeyEnv: "from-env"}, "from-file", ""},
		{"env", serveOptions{apiKeyEnv: " from-env "}, "from-env", ""},
		{"none", serveOptions{}, "", "no API key"},
		{"blank env", serveOptions{apiKeyEnv: "  "}, "", "no API key"},
		{"empty file", serveOptions{keyFile: empty, apiKeyEnv: "from-env"}, "", "empty"},
		{"missing file", serveOptions{keyFile: filepath.Join(dir, "nope")}, "", "read --api-key-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.o.apiKey()
			if tc.errMatch != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMatch) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("apiKey() = %q, %v; want a one-line error with %q", got, err, tc.errMatch)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("apiKey() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestParseTemplates(t *testing.T) {
	got, err := parseTemplates([]string{"py=docker://python:3.12", "warm=my-snapshot", "x=a=b"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"py": "docker://python:3.12", "warm": "my-snapshot", "x": "a=b"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("templates (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"noequals", "=ref", "name="} {
		if _, err := parseTemplates([]string{bad}); err == nil {
			t.Errorf("--template %q: no error", bad)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{"127.0.0.1": true, "::1": true, "localhost": true, "": false, "0.0.0.0": false, "10.0.0.1": false} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}
