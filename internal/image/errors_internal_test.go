package image

import (
	"errors"
	"fmt"
	"net/url"
	"testing"
)

// The hint for a plain-HTTP registry addressed over HTTPS. Real registries
// on loopback are always spoken to over HTTP, so the error that triggers it
// cannot be produced against one here.
func TestRegistryErrorPlainHTTP(t *testing.T) {
	cause := &url.Error{Op: "Get", URL: "https://reg.example:5000/v2/", Err: errors.New("http: server gave HTTP response to HTTPS client")}
	err := registryError("reg.example:5000/app:1", "reg.example:5000", true, fmt.Errorf("ping: %w", cause))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("kind: %v", err)
	}
	if want := "registry reg.example:5000 speaks plain HTTP, not HTTPS: pull with --tls-verify=false if you trust it"; err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"busybox", "docker://a/b:c", "oci:/x:latest", "oci-archive:/a.tar:n/m:1",
		"docker-archive:/a.tar", "containers-storage:localhost/x", "127.0.0.1:5000/a@sha256:" + fmt.Sprintf("%064d", 0)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		src, err := ParseReference(s, false)
		if err != nil {
			if !errors.Is(err, ErrBadReference) {
				t.Fatalf("ParseReference(%q) error %v does not wrap ErrBadReference", s, err)
			}
			return
		}
		// What String gives back parses to the same thing.
		again, err := ParseReference(src.String(), false)
		if err != nil {
			t.Fatalf("ParseReference(%q) ok, but its String %q fails: %v", s, src.String(), err)
		}
		if again.String() != src.String() {
			t.Fatalf("round trip %q -> %q -> %q", s, src.String(), again.String())
		}
	})
}
