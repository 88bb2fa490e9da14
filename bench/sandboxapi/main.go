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
//	CGO_ENABLED=0 go build -o /tmp/ ./cmd/fcvm ./cmd/fc-agent
//	go run ./bench/mkbusybox -o /tmp/busybox.tar
//	go run ./bench/sandboxapi -fcvm /tmp/fcvm -image oci-archive:/tmp/busybox.tar
//
// Set FCVM_DATA_DIR and FCVM_RUNTIME_DIR as for fcvm itself.
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
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	fcvm := flag.String("fcvm", "fcvm", "the fcvm binary")
	image := flag.String("image", "", "image reference (required); needs /bin/sh")
	n := flag.Int("n", 50, "round trips of each kind")
	bash := flag.Bool("bash", false, "also time the SDK's /bin/bash -l -c form (the image needs bash)")
	flag.Parse()
	if *image == "" {
		fmt.Fprintln(os.Stderr, "sandboxapi: give -image, e.g. -image oci-archive:/tmp/busybox.tar")
		os.Exit(2)
	}
	if err := run(*fcvm, *image, *n, *bash); err != nil {
		fmt.Fprintf(os.Stderr, "sandboxapi: %v\n", err)
		os.Exit(1)
	}
}

func run(fcvm, image string, n int, bash bool) error {
	b := make([]byte, 16)
	rand.Read(b)
	key := hex.EncodeToString(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := exec.CommandContext(ctx, fcvm, "serve", "--listen", "127.0.0.1:0", "--template", "bench="+image)
	serve.Env = append(os.Environ(), "FCVM_API_KEY="+key)
	serve.Cancel = func() error { return serve.Process.Signal(syscall.SIGTERM) }
	serve.WaitDelay = 10 * time.Second
	stderr, err := serve.StderrPipe()
	if err != nil {
		return err
	}
	if err := serve.Start(); err != nil {
		return fmt.Errorf("start serve: %w", err)
	}
	defer serve.Wait()
	defer cancel()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "fcvm serve: listening on "); ok {
				addr <- a
			}
		}
	}()
	var url string
	select {
	case a := <-addr:
		url = "http://" + a
	case <-time.After(30 * time.Second):
		return fmt.Errorf("serve did not say where it listens within 30s")
	}

	t0 := time.Now()
	var sb struct {
		ID    string `json:"sandboxID"`
		Token string `json:"envdAccessToken"`
	}
	if err := call(url+"/v2/sandboxes", key, `{"templateID":"bench","timeout":3600}`, &sb); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer func() {
		req, _ := http.NewRequest(http.MethodDelete, url+"/sandboxes/"+sb.ID, nil)
		req.Header.Set("X-API-KEY", key)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
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
