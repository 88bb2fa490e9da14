// Command sandboxapi measures the sandbox API's command round trip beside
// fcvm exec's, on the same VM in the same run: what an E2B SDK user waits
// for in commands.run("true") against what a CLI user waits for in
// `fcvm exec VM true`.
//
// It starts `fcvm serve` on a loopback port with a throwaway key, creates
// one sandbox from the image, and then, n times, alternately:
//
//   - api: process.Process/Start of `true` over HTTP/1.1 with Connect's
//     JSON stream framing, as the SDK sends it (a new connection each
//     time, as the SDK's fetch does not keep one for streams), timed from
//     the request to the end-stream envelope;
//   - api-bash: the same with the SDK's own command line, /bin/bash -l -c
//     true (only when the image has bash: -bash);
//   - exec: `fcvm exec SANDBOX true`, timed around the fcvm process.
//
// Alternating keeps the two exposed to the same load. The sandbox and
// serve are removed at the end.
//
// With -sdk it drives serve with the official E2B JS SDK instead
// (bench/sandboxapi/sdk.mjs, the e2b package of test/e2b; run
// scripts/install-e2b.sh first): create to first command from the image
// (-cold cold boots) and from a snapshot template (-clones clones), and
// commands.run("true") alternated with `fcvm exec` on an image-booted
// sandbox and on a clone, -n of each. Without -image it builds a busybox
// image with a /bin/bash shim (the SDK runs /bin/bash -l -c CMD).
//
//	CGO_ENABLED=0 go build -o /tmp/ ./cmd/fcvm ./cmd/fc-agent
//	go run ./bench/mkbusybox -o /tmp/busybox.tar
//	go run ./bench/sandboxapi -fcvm /tmp/fcvm -image oci-archive:/tmp/busybox.tar
//	go run ./bench/sandboxapi -fcvm /tmp/fcvm -sdk     # from the repository's root
//
// Set FCVM_DATA_DIR and FCVM_RUNTIME_DIR as for fcvm itself. Every
// sandbox serve still has at the end is killed, whatever went wrong.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/bench/busybox"
)

func main() {
	fcvm := flag.String("fcvm", "fcvm", "the fcvm binary")
	image := flag.String("image", "", "image reference (required); needs /bin/sh")
	n := flag.Int("n", 50, "round trips of each kind")
	bash := flag.Bool("bash", false, "also time the SDK's /bin/bash -l -c form (the image needs bash)")
	sdk := flag.Bool("sdk", false, "drive serve with the E2B JS SDK (sdk.mjs) instead of raw HTTP")
	cold := flag.Int("cold", 5, "with -sdk: sandboxes created from the image (cold boots)")
	clones := flag.Int("clones", 10, "with -sdk: sandboxes created from a snapshot template (clones)")
	script := flag.String("script", "bench/sandboxapi/sdk.mjs", "with -sdk: the SDK script")
	flag.Parse()
	if *image == "" && !*sdk {
		fmt.Fprintln(os.Stderr, "sandboxapi: give -image, e.g. -image oci-archive:/tmp/busybox.tar")
		os.Exit(2)
	}
	if *n < 1 || *cold < 1 || *clones < 1 {
		fmt.Fprintln(os.Stderr, "sandboxapi: -n, -cold and -clones must be at least 1")
		os.Exit(2)
	}
	var err error
	if *sdk {
		err = runSDK(*fcvm, *image, *script, *cold, *clones, *n)
	} else {
		err = run(*fcvm, *image, *n, *bash)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandboxapi: %v\n", err)
		os.Exit(1)
	}
}

// runSDK times serve through the E2B SDK: sdk.mjs does the timing,
// this starts serve and cleans up after it.
func runSDK(fcvm, image, script string, cold, clones, n int) error {
	sdk := filepath.Join(filepath.Dir(script), "..", "..", "test", "e2b", "node_modules", "e2b", "package.json")
	if _, err := os.Stat(sdk); err != nil {
		return fmt.Errorf("the E2B SDK is not installed: run scripts/install-e2b.sh (and run this from the repository's root): %w", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("node not found: run scripts/install-e2b.sh: %w", err)
	}
	if image == "" {
		dir, err := os.MkdirTemp("", "sandboxapi-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		img, err := busybox.WithBash()
		if err != nil {
			return err
		}
		path := filepath.Join(dir, "busybox-bash.tar")
		if err := busybox.WriteImage(img, path); err != nil {
			return err
		}
		image = "oci-archive:" + path
	}
	if abs, err := exec.LookPath(fcvm); err == nil {
		fcvm, _ = filepath.Abs(abs)
	}
	key, url, stop, err := startServe(fcvm, image)
	if err != nil {
		return err
	}
	defer stop()
	snap := "sdkbench-" + key[:8]
	defer func() {
		// Whatever the script left, on success or not.
		for _, id := range sandboxIDs(url, key) {
			fmt.Fprintf(os.Stderr, "sandboxapi: killing sandbox %s the script left\n", id)
			del(url+"/sandboxes/"+id, key)
		}
		del(url+"/templates/"+snap, key)
	}()
	cmd := exec.Command("node", script)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(),
		"E2B_API_URL="+url, "E2B_SANDBOX_URL="+url, "E2B_API_KEY="+key, "E2B_DOMAIN=fcvm.invalid",
		"TEMPLATE=bench", "SNAPSHOT="+snap, "FCVM="+fcvm,
		fmt.Sprintf("COLD=%d", cold), fmt.Sprintf("CLONES=%d", clones), fmt.Sprintf("RUNS=%d", n))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("node %s: %w", script, err)
	}
	return nil
}

// sandboxIDs lists the sandboxes serve has, running or paused.
func sandboxIDs(url, key string) []string {
	req, _ := http.NewRequest(http.MethodGet, url+"/v2/sandboxes?limit=1000", nil)
	req.Header.Set("X-API-KEY", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var list []struct {
		ID string `json:"sandboxID"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list)
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	return ids
}

// del sends DELETE to url with the key.
func del(url, key string) {
	req, _ := http.NewRequest(http.MethodDelete, url, nil)
	req.Header.Set("X-API-KEY", key)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

func run(fcvm, image string, n int, bash bool) error {
	key, url, stop, err := startServe(fcvm, image)
	if err != nil {
		return err
	}
	defer stop()
	t0 := time.Now()
	var sb struct {
		ID    string `json:"sandboxID"`
		Token string `json:"envdAccessToken"`
	}
	if err := call(url+"/v2/sandboxes", key, `{"templateID":"bench","timeout":3600}`, &sb); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer del(url+"/sandboxes/"+sb.ID, key)
	fmt.Printf("create (image, cold): %v\n", time.Since(t0).Round(time.Millisecond))

	kinds := []string{"api", "exec"}
	if bash {
		kinds = append(kinds, "api-bash")
	}
	times := map[string][]time.Duration{}
	for i := 0; i < n+1; i++ {
		for _, k := range kinds {
			start := time.Now()
			var err error
			switch k {
			case "api":
				err = start1(url, sb.ID, sb.Token, `{"process":{"cmd":"true"}}`)
			case "api-bash":
				err = start1(url, sb.ID, sb.Token, `{"process":{"cmd":"/bin/bash","args":["-l","-c","true"]}}`)
			case "exec":
				var out []byte
				out, err = exec.Command(fcvm, "exec", sb.ID, "true").CombinedOutput()
				if err != nil {
					err = fmt.Errorf("%w: %s", err, out)
				}
			}
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if i > 0 { // the first of each warms caches up
				times[k] = append(times[k], time.Since(start))
			}
		}
	}
	fmt.Printf("%-9s %9s %9s %9s (n=%d)\n", "", "p50", "p99", "max", n)
	for _, k := range kinds {
		ts := times[k]
		slices.Sort(ts)
		fmt.Printf("%-9s %9v %9v %9v\n", k, pct(ts, 50), pct(ts, 99), ts[len(ts)-1].Round(time.Millisecond))
	}
	fmt.Printf("api/exec: p50 %.2fx, p99 %.2fx\n",
		float64(pct(times["api"], 50))/float64(pct(times["exec"], 50)),
		float64(pct(times["api"], 99))/float64(pct(times["exec"], 99)))
	return nil
}

// startServe starts `fcvm serve` on a free loopback port with a throwaway
// key and the template alias "bench" for image, and returns the key, its
// URL and a stop that ends serve (SIGTERM) and waits for it.
func startServe(fcvm, image string) (key, url string, stop func(), err error) {
	b := make([]byte, 16)
	rand.Read(b)
	key = hex.EncodeToString(b)
	ctx, cancel := context.WithCancel(context.Background())
	serve := exec.CommandContext(ctx, fcvm, "serve", "--listen", "127.0.0.1:0", "--template", "bench="+image)
	serve.Env = append(os.Environ(), "FCVM_API_KEY="+key)
	serve.Cancel = func() error { return serve.Process.Signal(syscall.SIGTERM) }
	serve.WaitDelay = 10 * time.Second
	stderr, err := serve.StderrPipe()
	if err != nil {
		cancel()
		return "", "", nil, err
	}
	if err := serve.Start(); err != nil {
		cancel()
		return "", "", nil, fmt.Errorf("start serve: %w", err)
	}
	stop = func() { cancel(); serve.Wait() }
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "fcvm serve: listening on "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return key, "http://" + a, stop, nil
	case <-time.After(30 * time.Second):
		stop()
		return "", "", nil, fmt.Errorf("serve did not say where it listens within 30s")
	}
}

// pct is the p-th percentile of sorted ts (nearest rank).
func pct(ts []time.Duration, p int) time.Duration {
	i := (len(ts)*p + 99) / 100
	return ts[max(i, 1)-1].Round(time.Millisecond)
}

// call POSTs body to the control plane and decodes the answer into v.
func call(url, key, body string, v any) error {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("X-API-KEY", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// start1 runs one command through process.Process/Start and reads the
// stream to its end; a command that does not exit 0 is an error.
func start1(url, id, token, msg string) error {
	body := append([]byte{0}, binary.BigEndian.AppendUint32(nil, uint32(len(msg)))...)
	req, _ := http.NewRequest(http.MethodPost, url+"/process.Process/Start", bytes.NewReader(append(body, msg...)))
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("E2b-Sandbox-Id", id)
	req.Header.Set("X-Access-Token", token)
	req.Header.Set("Connect-Timeout-Ms", "60000")
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	all, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	for len(all) >= 5 {
		flags, n := all[0], int(binary.BigEndian.Uint32(all[1:5]))
		if len(all) < 5+n {
			break
		}
		m := all[5 : 5+n]
		all = all[5+n:]
		if flags&2 != 0 {
			if string(m) != "{}" {
				return fmt.Errorf("stream ended with %s", m)
			}
			return nil
		}
		if bytes.Contains(m, []byte(`"end"`)) && !bytes.Contains(m, []byte(`"exitCode":0`)) {
			return fmt.Errorf("command ended with %s", m)
		}
	}
	return fmt.Errorf("stream ended without its end-stream envelope")
}
