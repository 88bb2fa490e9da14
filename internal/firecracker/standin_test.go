package firecracker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as a stand-in for the firecracker and jailer
// binaries, so the driver's real process code runs in tests on a host
// without them. It serves the validating fake API on --api-sock; it never
// boots anything. FCVM_TEST_STANDIN picks the behaviour:
//
//	api       serve the API; exit 0 on SendCtrlAltDel
//	nosocket  never create the socket
//	exit      print an error on stderr and exit 1
//	jailer    act as the jailer: parse its flags, serve the API at
//	          <chroot-base>/<exec name>/<id>/root/<api-sock> (no chroot)
//	parent    start a machine with the api stand-in, print its PID, exit
//
// FCVM_TEST_RECORD names a file that receives one JSON line per request;
// FCVM_TEST_IGNORE_CAD=1 ignores SendCtrlAltDel (to test the kill after the
// grace period); FCVM_TEST_VERSION is the version it reports.
const standinEnv = "FCVM_TEST_STANDIN"

func TestMain(m *testing.M) {
	if mode := os.Getenv(standinEnv); mode != "" {
		os.Exit(standin(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func standinVersion() string {
	if v := os.Getenv("FCVM_TEST_VERSION"); v != "" {
		return v
	}
	return "1.17.0"
}

func standin(mode string, args []string) int {
	for _, a := range args {
		if a == "--version" {
			fmt.Printf("Firecracker v%s\n\n", standinVersion())
			return 0
		}
	}
	flag := func(name string) string {
		for i, a := range args {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
		}
		return ""
	}
	switch mode {
	case "nosocket":
		fmt.Fprintln(os.Stderr, "stand-in: not creating the API socket")
		time.Sleep(time.Hour)
		return 0
	case "exit":
		fmt.Fprintln(os.Stderr, "stand-in: boom: cannot open kernel")
		return 1
	case "parent":
		return standinParent(args)
	}
	sock := flag("--api-sock")
	root := ""
	if mode == "jailer" {
		root = filepath.Join(flag("--chroot-base-dir"), filepath.Base(flag("--exec-file")), flag("--id"), "root")
		sock = filepath.Join(root, sock)
	}
	spec, err := LoadSpec()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	api := newFakeAPI(spec, standinVersion())
	api.root = root
	var recMu sync.Mutex
	if path := os.Getenv("FCVM_TEST_RECORD"); path != "" {
		api.record = func(c call) {
			recMu.Lock()
			defer recMu.Unlock()
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return
			}
			json.NewEncoder(f).Encode(c)
			f.Close()
		}
	}
	api.onCtrlAltDel = func() {
		if os.Getenv("FCVM_TEST_IGNORE_CAD") == "1" {
			return
		}
		os.Exit(0)
	}
	if api.record != nil {
		argv, _ := json.Marshal(args)
		api.record(call{Op: "ARGS", Body: argv})
	}
	if cf := flag("--config-file"); cf != "" {
		data, err := os.ReadFile(cf)
		var c VMConfig
		if err == nil {
			err = json.Unmarshal(data, &c)
		}
		if err == nil {
			err = spec.ValidateVMConfig(c)
		}
		if api.record != nil {
			rec := call{Op: "CONFIG-FILE", Body: data}
			if err != nil {
				rec.Invalid = err.Error()
			}
			api.record(rec)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "stand-in: bad config file:", err)
			return 1
		}
		api.state = "Running"
	}
	if n, _ := strconv.Atoi(os.Getenv("FCVM_TEST_CONSOLE_FLOOD")); n > 0 {
		// A guest flooding its serial console.
		line := []byte(strings.Repeat("x", 1023) + "\n")
		for range n >> 10 {
			os.Stdout.Write(line)
		}
	}
	fmt.Println("stand-in serial console: no VM here")
	fmt.Fprintln(os.Stderr, "stand-in log: serving the API on", sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	http.Serve(l, api)
	return 0
}

// standinParent starts a machine (the api stand-in) and exits without
// stopping it: the parent-death signal must take the child down.
func standinParent(args []string) int {
	dir := args[0]
	os.Setenv(standinEnv, "api")
	d := New(Options{Binary: os.Args[0]})
	m, err := d.StartMachine(context.Background(), minimalConfig(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(m.PID())
	return 0
}

// readRecord reads the API calls the stand-in recorded.
func readRecord(t *testing.T, path string) []call {
	t.Helper()
	var calls []call
	for _, c := range readRecordAll(t, path) {
		if c.Op != "ARGS" {
			calls = append(calls, c)
		}
	}
	return calls
}

// readArgs returns the command line of each stand-in process.
func readArgs(t *testing.T, path string) [][]string {
	t.Helper()
	var out [][]string
	for _, c := range readRecordAll(t, path) {
		if c.Op == "ARGS" {
			var a []string
			if err := json.Unmarshal(c.Body, &a); err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
		}
	}
	return out
}

func readRecordAll(t *testing.T, path string) []call {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read record: %v", err)
	}
	var calls []call
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var c call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("record line %q: %v", line, err)
		}
		calls = append(calls, c)
	}
	return calls
}
