package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/sandboxapi"
)

type serveOptions struct {
	listen     string
	keyFile    string
	templates  []string
	maxUpload  int64
	maxSandbox int
	tlsCert    string
	tlsKey     string
	apiKeyEnv  string
}

func newServeCmd(env *Env) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve [--listen ADDR] [--api-key-file F] [--template NAME=REF ...]",
		Short: "Serve the sandbox API (E2B-compatible) over HTTP",
		Long: `Serve an HTTP API whose sandbox part is wire-compatible with E2B's, so that
the official E2B SDKs drive fcvm VMs: point E2B_API_URL and E2B_SANDBOX_URL
at the listen address and set E2B_API_KEY to the key. The key comes from
--api-key-file or FCVM_API_KEY; serve refuses to start without one. Each
sandbox is an ordinary VM (fcvm ls shows it, named by its sandbox ID), so
serve can restart without losing sandboxes.

A template ID resolves to a --template alias, then a snapshot tag (the
sandbox is a clone), then an image reference as fcvm run takes it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.apiKeyEnv = os.Getenv("FCVM_API_KEY")
			return runServe(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:3999", "address to listen on (loopback unless told otherwise)")
	f.StringVar(&o.keyFile, "api-key-file", "", "file holding the API key (else $FCVM_API_KEY)")
	f.StringArrayVar(&o.templates, "template", nil, "template alias: NAME=REF, REF a snapshot tag or an image reference (repeatable)")
	f.Int64Var(&o.maxUpload, "max-upload", sandboxapi.DefaultMaxUpload, "largest file upload in bytes")
	f.IntVar(&o.maxSandbox, "max-sandboxes", sandboxapi.DefaultMaxSandboxes, "most sandboxes alive or starting at once (beyond it, create gets 429)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM; needs --tls-key)")
	f.StringVar(&o.tlsKey, "tls-key", "", "private key of --tls-cert (PEM)")
	return cmd
}

// apiKey reads the key from --api-key-file, else FCVM_API_KEY.
func (o *serveOptions) apiKey() (string, error) {
	if o.keyFile != "" {
		b, err := os.ReadFile(o.keyFile)
		if err != nil {
			return "", fmt.Errorf("read --api-key-file: %w", err)
		}
		if k := strings.TrimSpace(string(b)); k != "" {
			return k, nil
		}
		return "", fmt.Errorf("--api-key-file %s: empty", o.keyFile)
	}
	if k := strings.TrimSpace(o.apiKeyEnv); k != "" {
		return k, nil
	}
	return "", errors.New("serve: no API key: set FCVM_API_KEY or give --api-key-file")
}

func parseTemplates(flags []string) (map[string]string, error) {
	m := map[string]string{}
	for _, t := range flags {
		name, ref, ok := strings.Cut(t, "=")
		if !ok || name == "" || ref == "" {
			return nil, fmt.Errorf("--template %q: want NAME=REF", t)
		}
		m[name] = ref
	}
	return m, nil
}

func runServe(ctx context.Context, env *Env, o *serveOptions) error {
	key, err := o.apiKey()
	if err != nil {
		return err
	}
	templates, err := parseTemplates(o.templates)
	if err != nil {
		return err
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("serve: --tls-cert and --tls-key go together")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find fcvm executable: %w", err)
	}
	srv, err := sandboxapi.New(sandboxapi.Config{
		Engine:       env.engine(),
		APIKey:       key,
		Templates:    templates,
		Fcvm:         exe,
		StateDir:     filepath.Join(env.Dirs.Data, "sandboxes"),
		MaxUpload:    o.maxUpload,
		MaxSandboxes: o.maxSandbox,
		Log:          env.Log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.listen, err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
	}
	if host, _, _ := net.SplitHostPort(o.listen); o.tlsCert == "" && !isLoopback(host) {
		fmt.Fprintf(env.Stderr, "fcvm serve: warning: %s is not a loopback address and there is no TLS: the API key and sandbox tokens cross the network in clear\n", o.listen)
	}
	fmt.Fprintf(env.Stderr, "fcvm serve: listening on %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() {
		if o.tlsCert != "" {
			errc <- hs.ServeTLS(ln, o.tlsCert, o.tlsKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", o.listen, err)
	case <-ctx.Done():
	}
	// Sandboxes are VMs with their own supervisors: they go on, and the
	// next serve takes them back.
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(shutdown)
}

// isLoopback reports whether host names only this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
