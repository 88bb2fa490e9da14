package image_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/imagetest"
)

func TestPullErrors(t *testing.T) {
	addr := imagetest.StartRegistry(t)
	imagetest.Push(t, imagetest.Busybox(t, imagetest.Options{}), addr+"/test/busybox:1")
	closed := imagetest.ClosedAddr(t)
	missing := filepath.Join(t.TempDir(), "missing.tar")
	s := newStore(t)

	for _, tc := range []struct {
		ref     string
		kind    error
		wantMsg string // the exact message, or a part of it when it ends in "..."
	}{
		{addr + "/test/nosuch:1", image.ErrNotFound,
			"image " + addr + "/test/nosuch:1 not found in the registry: check the name and tag"},
		{addr + "/test/busybox:nosuch", image.ErrNotFound,
			"image " + addr + "/test/busybox:nosuch not found in the registry: check the name and tag"},
		{closed + "/test/busybox:1", image.ErrUnreachable,
			"registry " + closed + " unreachable: dial tcp " + closed + ": connect: connection refused: check the address and that the registry is running"},
		{"UPPER/case", image.ErrBadReference, `malformed image reference "UPPER/case": ...`},
		{addr + "/test/busybox::1", image.ErrBadReference, `malformed image reference "` + addr + `/test/busybox::1": ...`},
		{"busybox@sha256:nothex", image.ErrBadReference, `malformed image reference "busybox@sha256:nothex": ...`},
		{"", image.ErrBadReference, `malformed image reference "": ...`},
		{"oci-archive:", image.ErrBadReference, `malformed image reference "oci-archive:": ...`},
		{"oci-archive:" + missing, image.ErrNotFound, "image oci-archive:" + missing + " not found: no file " + missing + ": check the path"},
		{"docker-archive:" + missing, image.ErrNotFound, "image docker-archive:" + missing + " not found: no file " + missing + ": check the path"},
		{"oci:" + missing, image.ErrNotFound, "image oci:" + missing + " not found: " + missing + " is not an OCI layout (no index.json): check the path"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			_, err := s.Pull(context.Background(), tc.ref, image.DefaultPullOptions())
			if !errors.Is(err, tc.kind) {
				t.Fatalf("Pull(%q) = %v, want %v", tc.ref, err, tc.kind)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			if prefix, ok := strings.CutSuffix(tc.wantMsg, "..."); ok {
				if !strings.HasPrefix(msg, prefix) {
					t.Errorf("message %q, want it to start %q", msg, prefix)
				}
			} else if msg != tc.wantMsg {
				t.Errorf("message\n %q, want\n %q", msg, tc.wantMsg)
			}
		})
	}
	list, err := s.List()
	if err != nil || len(list) != 0 {
		t.Errorf("failed pulls left images: %+v, %v", list, err)
	}
	checkClean(t, s)
}

func TestLookupNotFound(t *testing.T) {
	s := newStore(t)
	_, err := s.Lookup("127.0.0.1:1/nosuch:1")
	if !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("Lookup: %v", err)
	}
	if want := "image 127.0.0.1:1/nosuch:1 not known locally: pull it with `fcvm image pull 127.0.0.1:1/nosuch:1`"; err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}
	if _, err := s.Lookup("Bad//Ref"); !errors.Is(err, image.ErrBadReference) {
		t.Errorf("Lookup of a malformed reference: %v", err)
	}
}

// fakeRegistry answers /v2/ like a registry that wants basic auth for
// everything, and 404s (MANIFEST_UNKNOWN) for authenticated manifest
// requests, which is enough to show that credentials were sent.
func fakeRegistry(t *testing.T, user, pass string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestPullAuth(t *testing.T) {
	// Keep the host's own auth files out of it.
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_RUNTIME_DIR", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, ".docker"))
	t.Setenv("REGISTRY_AUTH_FILE", "")
	addr := fakeRegistry(t, "alice", "s3cret")
	ref := addr + "/private/app:1"
	s := newStore(t)

	_, err := s.Pull(context.Background(), ref, image.DefaultPullOptions())
	if !errors.Is(err, image.ErrUnauthorized) {
		t.Fatalf("Pull without credentials: %v, want ErrUnauthorized", err)
	}
	if want := "registry " + addr + " refused access to " + ref + " (authentication required, or the image does not exist): log in with `podman login " + addr + "` or check the name"; err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}

	// Each auth file in turn, in podman's format.
	auth := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, addr, base64.StdEncoding.EncodeToString([]byte("alice:s3cret")))
	for _, p := range []struct{ env, path string }{
		{"REGISTRY_AUTH_FILE", filepath.Join(home, "custom-auth.json")},
		{"", filepath.Join(home, "containers", "auth.json")},
		{"", filepath.Join(home, ".config", "containers", "auth.json")},
		{"", filepath.Join(home, ".docker", "config.json")},
	} {
		if p.env != "" {
			t.Setenv(p.env, p.path)
		}
		os.MkdirAll(filepath.Dir(p.path), 0o700)
		if err := os.WriteFile(p.path, []byte(auth), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := s.Pull(context.Background(), ref, image.DefaultPullOptions())
		if !errors.Is(err, image.ErrNotFound) {
			t.Errorf("Pull with credentials in %s: %v, want ErrNotFound (past auth)", p.path, err)
		}
		os.Remove(p.path)
		if p.env != "" {
			t.Setenv(p.env, "")
		}
	}
}
