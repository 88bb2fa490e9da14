// Package imagetest builds small real container images and serves them from
// a real local registry, for tests of fcvm's image handling and end-to-end
// runs. Nothing here contacts any host but 127.0.0.1.
//
//	addr := imagetest.StartRegistry(t)               // Debian's docker-registry on 127.0.0.1
//	img := imagetest.Busybox(t, imagetest.Options{Cmd: []string{"sh", "-c", "echo hi"}})
//	imagetest.Push(t, img, addr+"/test/busybox:1")   // then pull "127.0.0.1:PORT/test/busybox:1"
//	imagetest.WriteOCIArchive(t, img, path)          // or "oci-archive:"+path
//
// The images are built from Debian's busybox-static (/bin/busybox): one
// layer with busybox and its applet symlinks, /etc/passwd and /etc/group
// with root and a user "app" (uid and gid 1000), and the files and config
// the Options ask for. They are reproducible: the same Options give the
// same image ID.
//
// # Requirements
//
// Tests fail (never skip) when /usr/bin/docker-registry or /bin/busybox is
// missing, saying: apt-get install docker-registry busybox-static.
package imagetest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/syncbuf"
)

// Install is what to do when a tool these helpers need is missing.
const Install = "apt-get install docker-registry busybox-static"

// RegistryBinary is Debian's docker-registry (the distribution registry).
const RegistryBinary = "/usr/bin/docker-registry"

// StartRegistry starts a registry on 127.0.0.1 with storage in a temp dir,
// waits until it answers, and stops it when the test ends. It returns
// "127.0.0.1:PORT".
func StartRegistry(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(RegistryBinary); err != nil {
		t.Fatalf("imagetest: %s not found: %s", RegistryBinary, Install)
	}
	var lastErr error
	for range 3 {
		addr, err := startRegistry(t)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	t.Fatalf("imagetest: start registry: %v", lastErr)
	return ""
}

func startRegistry(t testing.TB) (string, error) {
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: fcvm-imagetest
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command(RegistryBinary, "serve", cfgPath)
	// The registry reads REGISTRY_* variables over its config file.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", RegistryBinary, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			return "", fmt.Errorf("registry exited: %s", out.String())
		case <-ctx.Done():
			stop()
			return "", fmt.Errorf("registry on %s not ready after 15s: %s", addr, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() && out.Len() > 0 {
			t.Logf("registry %s output:\n%s", addr, out.String())
		}
	})
	return addr, nil
}

// freePort finds a TCP port on 127.0.0.1 nobody listens on. Another
// process may take it before the registry does; StartRegistry retries.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ClosedAddr returns "127.0.0.1:PORT" for a port nothing listens on, for
// testing unreachable registries.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("imagetest: find a closed port: %v", err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}
