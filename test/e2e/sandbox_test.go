package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/fcvm/fcvm/internal/imagetest"
)

// sdkBash stands in for bash in the busybox test image: the E2B SDK runs
// every command as /bin/bash -l -c CMD, and busybox has no bash.
const sdkBash = `#!/bin/sh
[ "$1" = -l ] && shift
exec /bin/sh "$@"
`

// sdkImage writes a busybox image with bash (sdkBash) and returns its
// reference.
func sdkImage(t *testing.T) string {
	t.Helper()
	layer := imagetest.Layer(t, imagetest.Entry{Name: "bin/bash", Mode: 0o755, Body: sdkBash})
	archive := filepath.Join(t.TempDir(), "sdk.tar")
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, imagetest.Options{ExtraLayers: []v1.Layer{layer}}), archive)
	return "oci-archive:" + archive
}

// startServe starts `fcvm serve` on a free loopback port with key and the
// template alias "bb" for the image ref, and returns its URL and a stop
// that ends serve alone (its sandboxes go on). At the end of the test the
// sandboxes serve still has are killed and serve is stopped.
func startServe(t *testing.T, key, ref string) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := fcvmCmd(ctx, dataDir, "serve", "--listen", "127.0.0.1:0", "--template", "bb="+ref)
	cmd.Env = append(cmd.Env, "FCVM_API_KEY="+key, "FCVM_LOG_LEVEL=info")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fcvm serve: %v", err)
	}
	var once sync.Once
	stopped := false
	stop := func() {
		once.Do(func() {
			stopped = true
			cancel()
			// Wait reports the cancel itself; only an exit status of its
			// own is serve's failure.
			err := cmd.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Errorf("fcvm serve: %v", err)
			}
		})
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			t.Log("serve: " + line)
			if a, ok := strings.CutPrefix(line, "fcvm serve: listening on "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		url := "http://" + a
		t.Cleanup(func() {
			if !stopped {
				killSandboxes(t, url, key)
			}
			stop()
		})
		return url, stop
	case <-time.After(30 * time.Second):
		stop()
		t.Fatal("fcvm serve did not say where it listens within 30s")
		return "", nil
	}
}

// killSandboxes deletes every sandbox serve at url still has: a test
// that failed half way leaves no VM running.
func killSandboxes(t *testing.T, url, key string) {
	if url == "" {
		return
	}
	req, _ := http.NewRequest(http.MethodGet, url+"/v2/sandboxes", nil)
	req.Header.Set("X-API-KEY", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("list sandboxes left: %v", err)
		return
	}
	var left []struct {
		ID string `json:"sandboxID"`
	}
	json.NewDecoder(resp.Body).Decode(&left)
	resp.Body.Close()
	for _, sb := range left {
		t.Logf("killing sandbox %s left by the test", sb.ID)
		req, _ := http.NewRequest(http.MethodDelete, url+"/sandboxes/"+sb.ID, nil)
		req.Header.Set("X-API-KEY", key)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
}

func TestServeRefusesToStartWithoutKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := fcvmCmd(ctx, t.TempDir(), "serve", "--listen", "127.0.0.1:0")
	cmd.Env = append(cmd.Env, "FCVM_API_KEY=")
	r := runQuiet(cmd, nil)
	if r.code == 0 || !strings.Contains(r.stderr, "no API key") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("serve without a key: want a one-line refusal, got %s", r)
	}
}

// TestSandboxAPIWithE2BSDK drives fcvm serve with the official E2B SDK
// (test/e2b, pinned by its package-lock.json): create, commands, files,
// list, kill, setTimeout and expiry, a wrong key.
func TestSandboxAPIWithE2BSDK(t *testing.T) {
	needSetup(t)
	_, here, _, _ := runtime.Caller(0)
	sdkDir := filepath.Join(filepath.Dir(here), "..", "e2b")
	if _, err := os.Stat(filepath.Join(sdkDir, "node_modules", "e2b", "package.json")); err != nil {
		t.Fatalf("the E2B SDK is not installed in %s: run scripts/install-e2b.sh (scripts/install-deps.sh does): %v", sdkDir, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: run scripts/install-e2b.sh: %v", err)
	}
	const key = "e2b_fcvm_e2e_test_key"
	ref := sdkImage(t)
	url, _ := startServe(t, key, ref)

	// A snapshot to clone sandboxes from (the fast path), and fcvm exec's
	// round trip on its original to compare the SDK's with.
	orig := startDetached(t, "run", "-d", "--name", uniqueName(t, "orig"), "--entrypoint", "/bin/sh", ref, "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done")
	var execs []time.Duration
	for range 10 {
		t0 := time.Now()
		if r := fcvm(t, "exec", orig, "true"); r.code != 0 {
			t.Fatalf("fcvm exec: %s", r)
		}
		execs = append(execs, time.Since(t0))
	}
	slices.Sort(execs)
	t.Logf("fcvm exec true: p50 %v, max %v (10 runs)", execs[len(execs)/2].Round(time.Millisecond), execs[len(execs)-1].Round(time.Millisecond))
	execOut(t, orig, "sh", "-c", "echo from-the-snapshot > /snapshot-marker")
	tag := uniqueName(t, "tpl")
	if r := fcvm(t, "snapshot", "create", orig, "--tag", tag); r.code != 0 {
		t.Fatalf("snapshot create: %s", r)
	}
	t.Cleanup(func() { fcvm(t, "snapshot", "rm", "-f", tag) })
	if r := fcvm(t, "rm", "-f", orig); r.code != 0 {
		t.Fatalf("rm the snapshot's original: %s", r)
	}

	// The control plane without the key: 401 and a JSON body.
	resp, err := http.Get(url + "/v2/sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var apiErr struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if resp.StatusCode != 401 || json.Unmarshal(body, &apiErr) != nil || apiErr.Code != 401 || apiErr.Message == "" {
		t.Errorf("no key: got %d %s, want 401 {code:401,message}", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "sdk_test.mjs")
	cmd.Dir = sdkDir
	cmd.Env = append(os.Environ(),
		"E2B_API_URL="+url,
		"E2B_SANDBOX_URL="+url,
		"E2B_API_KEY="+key,
		"E2B_DOMAIN=fcvm.invalid",
		"TEMPLATE=bb",
		"SNAPSHOT_TEMPLATE="+tag,
	)
	r := runQuiet(cmd, nil)
	t.Logf("node sdk_test.mjs → exit %d\nstderr:\n%s", r.code, r.stderr)
	if r.code != 0 {
		t.Fatalf("the SDK script failed: %s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var sum struct {
		SandboxID              string `json:"sandboxID"`
		ExpiredID              string `json:"expiredID"`
		CloneID                string `json:"cloneID"`
		CreateToFirstCommandMs int    `json:"createToFirstCommandMs"`
		CloneToFirstCommandMs  int    `json:"cloneToFirstCommandMs"`
		RunP50Ms               int    `json:"runP50Ms"`
		RunMaxMs               int    `json:"runMaxMs"`
		PauseMs                int    `json:"pauseMs"`
		ResumeToFirstCommandMs int    `json:"resumeToFirstCommandMs"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil || sum.SandboxID == "" || sum.ExpiredID == "" || sum.CloneID == "" {
		t.Fatalf("SDK summary %q: %v", lines[len(lines)-1], err)
	}
	t.Logf("create to first command: image %d ms, snapshot %d ms; commands.run round trip p50 %d ms, max %d ms (10 runs)",
		sum.CreateToFirstCommandMs, sum.CloneToFirstCommandMs, sum.RunP50Ms, sum.RunMaxMs)
	t.Logf("pause %d ms; connect (resume) to first file read %d ms", sum.PauseMs, sum.ResumeToFirstCommandMs)
	// The killed sandbox's pause snapshot went with it.
	if r := fcvm(t, "snapshot", "ls"); r.code != 0 || strings.Contains(r.stdout, "sbx-"+sum.SandboxID) {
		t.Errorf("pause snapshot of %s left behind: %s", sum.SandboxID, r)
	}
	// Killed and expired sandboxes leave no VM behind. An expired one is
	// gone from the API at once and its VM is removed right after.
	for _, id := range []string{sum.SandboxID, sum.ExpiredID, sum.CloneID} {
		record := filepath.Join(dataDir, "sandboxes", id+".json")
		deadline := time.Now().Add(30 * time.Second)
		for {
			vm := findVM(t, id)
			_, err := os.Stat(record)
			if vm == nil && err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("sandbox %s: 30s after it ended, VM %+v, record %v", id, vm, err)
				break
			}
			time.Sleep(time.Second)
		}
	}
}

// apiCall makes one plain HTTP call to serve, as curl would, and returns
// the status and body.
func apiCall(t *testing.T, method, url, body string, header map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestSandboxSurvivesServeRestart creates a sandbox with plain HTTP (the
// README's curl example), restarts serve, and uses the sandbox through
// the new serve: sandboxes are VMs with their own supervisors.
func TestSandboxSurvivesServeRestart(t *testing.T) {
	needSetup(t)
	const key = "restart-test-key"
	ref := sdkImage(t)
	url, stop := startServe(t, key, ref)
	ctl := map[string]string{"X-API-KEY": key, "Content-Type": "application/json"}
	hostPort := freePort(t)
	code, body := apiCall(t, "POST", url+"/v2/sandboxes", fmt.Sprintf(`{"templateID":"bb","timeout":300,"envVars":{"GREETING":"hi"},"ports":[{"hostPort":%d,"guestPort":8080}]}`, hostPort), ctl)
	var created struct {
		SandboxID       string `json:"sandboxID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	if code != http.StatusCreated || json.Unmarshal(body, &created) != nil || created.SandboxID == "" || created.EnvdAccessToken == "" {
		t.Fatalf("create: %d %s", code, body)
	}
	id := created.SandboxID

	stop()
	if vm := findVM(t, id); vm == nil || vm.Status != "running" {
		t.Fatalf("sandbox %s after serve stopped: %+v, want its VM running", id, vm)
	}
	url, _ = startServe(t, key, ref)
	if code, body := apiCall(t, "GET", url+"/sandboxes/"+id, "", ctl); code != http.StatusOK || !strings.Contains(string(body), `"state":"running"`) {
		t.Fatalf("GET /sandboxes/%s after restart: %d %s", id, code, body)
	}

	// A command through the new serve, in Connect's streaming framing.
	data := map[string]string{"E2b-Sandbox-Id": id, "X-Access-Token": created.EnvdAccessToken}
	// dataWith is the data-plane headers with a Content-Type.
	dataWith := func(ct string) map[string]string {
		h := maps.Clone(data)
		h["Content-Type"] = ct
		return h
	}
	req := `{"process":{"cmd":"/bin/sh","args":["-c","echo $GREETING $((6*7)); exit 5"]}}`
	env := append([]byte{0, 0, 0, 0, byte(len(req))}, req...)
	h := dataWith("application/connect+json")
	code, body = apiCall(t, "POST", url+"/process.Process/Start", string(env), h)
	if code != http.StatusOK {
		t.Fatalf("process.Process/Start: %d %s", code, body)
	}
	var msgs []string
	for len(body) >= 5 {
		n := int(binary.BigEndian.Uint32(body[1:5]))
		msgs = append(msgs, fmt.Sprintf("%d %s", body[0], body[5:5+n]))
		body = body[5+n:]
	}
	want := []string{
		`0 {"event":{"start":{"pid":1001}}}`,
		`0 {"event":{"data":{"stdout":"aGkgNDIK"}}}`, // "hi 42\n"
		`0 {"event":{"end":{"exitCode":5,"exited":true,"status":"exit status 5"}}}`,
		`2 {}`,
	}
	if diff := cmp.Diff(want, msgs); diff != "" {
		t.Errorf("process stream (-want +got):\n%s", diff)
	}

	// The published port (an fcvm extension) is listed and reaches a
	// server in the sandbox.
	wantPorts := fmt.Sprintf(`[{"hostIP":"127.0.0.1","hostPort":%d,"guestPort":8080,"proto":"tcp"}]`, hostPort)
	if code, body := apiCall(t, "GET", url+"/sandboxes/"+id+"/ports", "", ctl); code != http.StatusOK || strings.TrimSpace(string(body)) != wantPorts {
		t.Errorf("GET ports: %d %s, want %s", code, body, wantPorts)
	}
	execOut(t, id, "sh", "-c", "mkdir -p /www && echo served > /www/x && httpd -p 8080 -h /www")
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/x", hostPort))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got = string(b); got == "served\n" {
				break
			}
		}
	}
	if got != "served\n" {
		t.Errorf("GET the published port: %q, want the guest's file", got)
	}
	// Through serve, as E2B addresses a sandbox's own ports: by headers,
	// and by a Host of PORT-ID.DOMAIN (the SDK's getHost) with E2B's
	// traffic token.
	if code, body := apiCall(t, "GET", url+"/x", "", map[string]string{"E2b-Sandbox-Id": id, "E2b-Sandbox-Port": "8080", "X-Access-Token": created.EnvdAccessToken}); code != http.StatusOK || string(body) != "served\n" {
		t.Errorf("GET port 8080 through serve: %d %q", code, body)
	}
	byHost, _ := http.NewRequest("GET", url+"/x", nil)
	byHost.Host = "8080-" + id + ".fcvm.invalid"
	byHost.Header.Set("E2b-Traffic-Access-Token", created.EnvdAccessToken)
	if resp, err := http.DefaultClient.Do(byHost); err != nil {
		t.Errorf("GET port 8080 by Host: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "served\n" {
			t.Errorf("GET port 8080 by Host: %d %q", resp.StatusCode, b)
		}
	}
	if code, body := apiCall(t, "GET", url+"/x", "", map[string]string{"E2b-Sandbox-Id": id, "E2b-Sandbox-Port": "8081", "X-Access-Token": created.EnvdAccessToken}); code != http.StatusBadGateway || !strings.Contains(string(body), "does not publish port 8081") {
		t.Errorf("GET an unpublished port through serve: %d %s", code, body)
	}

	// Files: octet-stream up, plain GET down.
	h = dataWith("application/octet-stream")
	if code, body := apiCall(t, "POST", url+"/files?path=/tmp/dir/f.txt", "file body", h); code != http.StatusOK {
		t.Fatalf("POST /files: %d %s", code, body)
	}
	if code, body := apiCall(t, "GET", url+"/files?path=/tmp/dir/f.txt", "", data); code != http.StatusOK || string(body) != "file body" {
		t.Errorf("GET /files: %d %q", code, body)
	}
	if code, body := apiCall(t, "GET", url+"/files?path=/tmp/nope", "", data); code != http.StatusNotFound {
		t.Errorf("GET /files of a missing file: %d %s, want 404", code, body)
	}

	// A polled watcher (what the Python SDK's watch_dir uses): events
	// wait for GetWatcherEvents; a removed watcher is gone.
	rpc := func(method, body string) (int, string) {
		code, b := apiCall(t, "POST", url+"/filesystem.Filesystem/"+method, body, dataWith("application/json"))
		return code, string(b)
	}
	code, reply := rpc("CreateWatcher", `{"path":"/tmp/dir"}`)
	var watcher struct {
		ID string `json:"watcherId"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(reply), &watcher) != nil || watcher.ID == "" {
		t.Fatalf("CreateWatcher: %d %s", code, reply)
	}
	h = dataWith("application/octet-stream")
	if code, body := apiCall(t, "POST", url+"/files?path=/tmp/dir/new.txt", "x", h); code != http.StatusOK {
		t.Fatalf("POST /files: %d %s", code, body)
	}
	var events string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !strings.Contains(events, `"name":"new.txt","type":"EVENT_TYPE_CREATE"`); time.Sleep(200 * time.Millisecond) {
		code, got := rpc("GetWatcherEvents", `{"watcherId":"`+watcher.ID+`"}`)
		if code != http.StatusOK {
			t.Fatalf("GetWatcherEvents: %d %s", code, got)
		}
		events += got
	}
	if !strings.Contains(events, `"name":"new.txt","type":"EVENT_TYPE_CREATE"`) {
		t.Errorf("polled watcher: %s, want the create of new.txt", events)
	}
	if code, got := rpc("RemoveWatcher", `{"watcherId":"`+watcher.ID+`"}`); code != http.StatusOK {
		t.Errorf("RemoveWatcher: %d %s", code, got)
	}
	if code, got := rpc("GetWatcherEvents", `{"watcherId":"`+watcher.ID+`"}`); code != http.StatusNotFound || !strings.Contains(got, "not_found") {
		t.Errorf("GetWatcherEvents of a removed watcher: %d %s, want not_found", code, got)
	}

	if code, body := apiCall(t, "DELETE", url+"/sandboxes/"+id, "", ctl); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if vm := findVM(t, id); vm != nil {
		t.Errorf("sandbox %s killed, but its VM is still listed: %+v", id, vm)
	}
}

// sdkDir returns test/e2b with the SDK installed, or fails the test.
func sdkDir(t *testing.T) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(here), "..", "e2b")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "e2b", "package.json")); err != nil {
		t.Fatalf("the E2B SDK is not installed in %s: run scripts/install-e2b.sh (scripts/install-deps.sh does): %v", dir, err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node not found: run scripts/install-e2b.sh: %v", err)
	}
	return dir
}

// runSDKScript runs an SDK script in test/e2b against serve at url and
// returns the JSON summary it ends with.
func runSDKScript(t *testing.T, script, url, key string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = sdkDir(t)
	cmd.Env = append(os.Environ(),
		"E2B_API_URL="+url,
		"E2B_SANDBOX_URL="+url,
		"E2B_API_KEY="+key,
		"E2B_DOMAIN=fcvm.invalid",
	)
	cmd.Env = append(cmd.Env, env...)
	r := runQuiet(cmd, nil)
	t.Logf("node %s → exit %d\nstderr:\n%s", script, r.code, r.stderr)
	if r.code != 0 {
		t.Fatalf("the SDK script failed: %s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	return lines[len(lines)-1]
}

// TestSandboxAPIStreams drives commands that outlive their stream,
// Connect by PID, a PTY, recursive listings, directory watches, and
// fcvm's extensions in E2B's shapes (snapshots as templates, fork)
// through the official SDK (sdk_streams_test.mjs), from one sandbox.
func TestSandboxAPIStreams(t *testing.T) {
	needSetup(t)
	const key = "e2b_fcvm_streams_key"
	url, _ := startServe(t, key, sdkImage(t))
	out := runSDKScript(t, "sdk_streams_test.mjs", url, key, "TEMPLATE=bb")
	var sum struct {
		SandboxID  string `json:"sandboxID"`
		SnapshotMs int    `json:"snapshotMs"`
		ForkOf2Ms  int    `json:"forkOf2Ms"`
		// The sandboxes made from the snapshot and by the fork.
		FromSnapshotID string   `json:"fromSnapshotID"`
		ForkIDs        []string `json:"forkIDs"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.SandboxID == "" {
		t.Fatalf("SDK summary %q: %v", out, err)
	}
	t.Logf("snapshot of a sandbox %d ms, fork into 2 clones %d ms", sum.SnapshotMs, sum.ForkOf2Ms)
	if vm := findVM(t, sum.SandboxID); vm != nil {
		t.Errorf("sandbox %s killed, but its VM is still listed: %+v", sum.SandboxID, vm)
	}
	// The fork's clones and snapshot, and the deleted snapshot, are gone.
	if r := fcvm(t, "snapshot", "ls"); r.code != 0 || strings.Contains(r.stdout, sum.SandboxID) || strings.Contains(r.stdout, "streams-") {
		t.Errorf("snapshots left behind: %s", r)
	}
	for _, id := range append(sum.ForkIDs, sum.FromSnapshotID) {
		if vm := findVM(t, id); vm != nil {
			t.Errorf("sandbox %s killed, but its VM is still listed: %+v", id, vm)
		}
	}
}
