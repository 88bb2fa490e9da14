package mmds

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeMMDS follows Firecracker's MMDS v2 rules: a token from PUT
// /latest/api/token with a TTL header, required on every GET; JSON when
// asked for it.
type fakeMMDS struct {
	mu    sync.Mutex
	store string
}

func (f *fakeMMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPut && r.URL.Path == TokenPath:
		if r.Header.Get(TokenTTLHeader) == "" {
			http.Error(w, "Token time to live value not found.", http.StatusBadRequest)
			return
		}
		w.Write([]byte("tok123"))
	case r.Method == http.MethodGet:
		if r.Header.Get(TokenHeader) != "tok123" {
			http.Error(w, "No MMDS token provided.", http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.store == "" {
			http.Error(w, "Resource not found: /.", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(f.store))
	default:
		http.Error(w, "Not allowed HTTP method.", http.StatusMethodNotAllowed)
	}
}

func TestFetch(t *testing.T) {
	f := &fakeMMDS{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	if _, err := Fetch(ctx, srv.Client(), addr, "/"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty store: %v, want ErrNotFound", err)
	}
	f.mu.Lock()
	f.store = `{"fcvm":{"image":"x"}}`
	f.mu.Unlock()
	data, err := Fetch(ctx, srv.Client(), addr, "/")
	if err != nil || string(data) != `{"fcvm":{"image":"x"}}` {
		t.Fatalf("got %s, %v", data, err)
	}
}
