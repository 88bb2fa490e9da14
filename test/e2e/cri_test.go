package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/imagetest"
)

// crictlPath is where scripts/install-deps.sh builds crictl (from the Go
// module proxy).
func crictlPath() string {
	if p := os.Getenv("FCVM_CRICTL"); p != "" {
		return p
	}
	return "/var/cache/fcvm/tools/crictl"
}

// The pod network of the CRI test: CNI's bridge plugin on a bridge of
// the test's, addresses from a /24 of the test's. The host reaches the
// pods through the bridge; nothing is masqueraded. The bridge's name does
// not start with "fcvm", which the network package's tests count as
// theirs to find gone.
const (
	criBridge = "cri0fc"
	criSubnet = "10.97.16.0/24"
	criHostIP = "10.97.16.1"
)

// criConfig is the CRI plugin's section: fcvm as the default runtime,
// passing the pod's fcvm.io/ annotations to the sandbox, the test's CNI
// network and pause image, and streaming on loopback only.
const criConfig = `[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "fcvm.test/pause:1"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "fcvm"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.fcvm]
      runtime_type = "io.containerd.fcvm.v2"
      pod_annotations = ["fcvm.io/*"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "DIR/net.d"
`

// criNetwork is the CNI network list; DIR is the test's directory.
const criNetwork = `{"cniVersion": "1.0.0", "name": "fcvm-test", "plugins": [
  {"type": "bridge", "bridge": "` + criBridge + `", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "` + criSubnet + `", "gateway": "` + criHostIP + `"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "DIR/cni-ipam"}}]}
`

// crictl runs crictl against this containerd and logs its result.
func (c *ctrd) crictl(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	all := append([]string{"--runtime-endpoint", "unix://" + c.sock, "--image-endpoint", "unix://" + c.sock, "--timeout", "5m"}, args...)
	cmd := exec.CommandContext(ctx, crictlPath(), all...)
	cmd.Env = c.env
	r := runQuiet(cmd, nil)
	if r.runErr != nil {
		c.t.Fatalf("crictl %v: %v", args, r.runErr)
	}
	c.t.Logf("crictl %s → %s", strings.Join(args, " "), r)
	return r
}

// writeJSON writes v as JSON into the test's directory and returns the
// path.
func (c *ctrd) writeJSON(name string, v any) string {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// TestContainerdCRI drives fcvm's shim as Kubernetes would, through CRI
// with crictl: a pod is one VM in the pod's CNI network namespace, its
// containers run in that VM sharing its network, IPC and UTS namespaces,
// and logs, exec (sync and streaming), stop and remove of containers and
// pods work and leave nothing behind.
func TestContainerdCRI(t *testing.T) {
	needSetup(t)
	if _, err := os.Stat(crictlPath()); err != nil {
		t.Fatalf("crictl not built at %s (%v): run scripts/install-deps.sh", crictlPath(), err)
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatalf("CNI plugins missing (%v): run scripts/install-deps.sh (containernetworking-plugins)", err)
	}
	t.Cleanup(func() {
		// The bridge plugin leaves its bridge; the test made it.
		if _, err := net.InterfaceByName(criBridge); err == nil {
			exec.Command("ip", "link", "del", criBridge).Run()
		}
	})
	c := startContainerdWith(t, criConfig)
	if err := os.MkdirAll(filepath.Join(c.dir, "net.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "net.d", "10-fcvm-test.conflist"), []byte(strings.ReplaceAll(criNetwork, "DIR", c.dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	for ref, o := range map[string]imagetest.Options{
		"fcvm.test/busybox:1": {},
		// A pause container: waits for its end, as the pause image does.
		"fcvm.test/pause:1": {Entrypoint: []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"}, Cmd: []string{}},
	} {
		archive := filepath.Join(c.dir, strings.NewReplacer("/", "-", ":", "-").Replace(ref)+".tar")
		imagetest.WriteOCIArchive(t, imagetest.Busybox(t, o), archive)
		if r := c.ctr(nil, "-n", "k8s.io", "image", "import", "--index-name", ref, archive); r.code != 0 {
			t.Fatalf("import %s: %s\n%s", ref, r, c.log())
		}
	}

	pod := c.writeJSON("pod.json", map[string]any{
		"metadata":      map[string]any{"name": "web", "namespace": "default", "uid": "pod-uid-1", "attempt": 1},
		"hostname":      "webpod",
		"log_directory": filepath.Join(c.dir, "logs"),
		"annotations":   map[string]string{"fcvm.io/memory-mib": "384"},
		"dns_config":    map[string]any{"servers": []string{criHostIP}, "searches": []string{"default.svc.test", "svc.test"}, "options": []string{"ndots:5"}},
		"linux":         map[string]any{},
	})
	r := c.crictl("runp", pod)
	if r.code != 0 {
		t.Fatalf("runp: %s\n%s", r, c.log())
	}
	podID := strings.TrimSpace(r.stdout)
	t.Cleanup(func() {
		if t.Failed() {
			c.crictl("rmp", "-f", podID)
		}
	})
	if vm := findVM(t, "ctrd-k8s.io-"+podID); vm == nil || vm.Status != "running" {
		t.Fatalf("the pod's VM: %+v, want it running", vm)
	}
	r = c.crictl("inspectp", "-o", "json", podID)
	var insp struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &insp); err != nil || !strings.HasPrefix(insp.Status.Network.IP, "10.97.16.") {
		t.Fatalf("inspectp: pod IP %q (%v), want one of %s", insp.Status.Network.IP, err, criSubnet)
	}
	podIP := insp.Status.Network.IP

	web := c.writeJSON("web.json", map[string]any{
		"metadata": map[string]any{"name": "web"},
		"image":    map[string]any{"image": "fcvm.test/busybox:1"},
		"command":  []string{"sh", "-c", "echo web-started; echo web-err >&2; mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 80 -h /www"},
		"log_path": "web.log",
		"linux":    map[string]any{},
	})
	side := c.writeJSON("side.json", map[string]any{
		"metadata": map[string]any{"name": "side"},
		"image":    map[string]any{"image": "fcvm.test/busybox:1"},
		"command":  []string{"sleep", "3600"},
		"log_path": "side.log",
		"linux":    map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 64 << 20, "cpu_quota": 50000, "cpu_period": 100000}},
	})
	var ids []string
	for _, cfg := range []string{web, side} {
		r := c.crictl("create", podID, cfg, pod)
		if r.code != 0 {
			t.Fatalf("create %s: %s\n%s", cfg, r, c.log())
		}
		id := strings.TrimSpace(r.stdout)
		if r := c.crictl("start", id); r.code != 0 {
			t.Fatalf("start %s: %s\n%s", id, r, c.log())
		}
		ids = append(ids, id)
	}
	webID, sideID := ids[0], ids[1]

	t.Run("pod-ip", func(t *testing.T) {
		if got := httpGet(t, "http://"+podIP+":80/"); got != "hello-from-the-pod\n" {
			t.Errorf("GET the pod's address: %q", got)
		}
	})
	t.Run("shared-namespaces", func(t *testing.T) {
		// crictl exec -s ends what it prints with newlines of its own.
		r := c.crictl("exec", "-s", sideID, "wget", "-q", "-O", "-", "http://127.0.0.1:80/")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "hello-from-the-pod" {
			t.Errorf("the side container reaching web on the pod's loopback: %s", r)
		}
		ns := map[string]string{}
		for _, id := range []string{webID, sideID} {
			r := c.crictl("exec", "-s", id, "sh", "-c", "hostname; for n in net ipc uts pid; do readlink /proc/self/ns/$n; done")
			if r.code != 0 {
				t.Fatalf("exec in %s: %s", id, r)
			}
			ns[id] = r.stdout
		}
		w, s := strings.Fields(ns[webID]), strings.Fields(ns[sideID])
		if len(w) != 5 || len(s) != 5 || w[0] != "webpod" || s[0] != "webpod" {
			t.Fatalf("hostnames and namespaces: web %q side %q, want the pod's hostname webpod in both", w, s)
		}
		if w[1] != s[1] || w[2] != s[2] || w[3] != s[3] {
			t.Errorf("network, IPC and UTS namespaces differ: web %v side %v", w[1:4], s[1:4])
		}
		if w[4] == s[4] {
			t.Errorf("the containers share a PID namespace (%s): want their own", w[4])
		}
	})
	t.Run("pod-size", func(t *testing.T) {
		// fcvm.io/memory-mib=384: the guest's memory less what its
		// kernel reserves.
		r := c.crictl("exec", "-s", sideID, "awk", "/MemTotal/ {print int($2/1024)}", "/proc/meminfo")
		var mib int
		if _, err := fmt.Sscan(r.stdout, &mib); err != nil || mib > 384 || mib < 300 {
			t.Errorf("MemTotal %q MiB, want 300 to 384 (a 384 MiB VM)", r.stdout)
		}
	})
	t.Run("container-limits", func(t *testing.T) {
		// The side container's resources, on its cgroup in the VM.
		r := c.crictl("exec", "-s", sideID, "cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max")
		if got := strings.Fields(r.stdout); strings.Join(got, " ") != fmt.Sprint(64<<20)+" 50000 100000" {
			t.Errorf("memory.max and cpu.max of the side container: %q, want 64 MiB and 50000 100000", r.stdout)
		}
		r = c.crictl("exec", "-s", webID, "cat", "/sys/fs/cgroup/memory.max")
		if strings.TrimSpace(r.stdout) != "max" {
			t.Errorf("memory.max of the web container, which has no limit: %q", r.stdout)
		}
	})
	t.Run("dns-config", func(t *testing.T) {
		// The pod's dns_config, in every container of the pod.
		want := "search default.svc.test svc.test\nnameserver " + criHostIP + "\noptions ndots:5"
		for _, id := range []string{webID, sideID} {
			if r := c.crictl("exec", "-s", id, "cat", "/etc/resolv.conf"); strings.TrimSpace(r.stdout) != want {
				t.Errorf("resolv.conf of %s: %q, want %q", id, r.stdout, want)
			}
		}
	})
	t.Run("exec-streaming", func(t *testing.T) {
		// crictl reports the command's exit code in words, and exits 1.
		r := c.crictl("exec", sideID, "sh", "-c", "echo streamed; exit 3")
		if r.stdout != "streamed\n" || !strings.Contains(r.stderr, "command terminated with exit code 3") {
			t.Errorf("crictl exec (streaming): want exit 3 and the output, got %s", r)
		}
	})
	t.Run("logs", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := c.crictl("logs", webID)
			if strings.Contains(r.stdout, "web-started") && strings.Contains(r.stderr, "web-err") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("logs of web: want web-started on stdout and web-err on stderr, got %s", r)
			}
			time.Sleep(time.Second)
		}
	})
	t.Run("bad-input", func(t *testing.T) {
		bad := c.writeJSON("bad-pod.json", map[string]any{
			"metadata":    map[string]any{"name": "bad", "namespace": "default", "uid": "pod-uid-2", "attempt": 1},
			"annotations": map[string]string{"fcvm.io/vcpus": "2"},
			"linux":       map[string]any{},
		})
		broken := c.writeJSON("broken.json", map[string]any{
			"metadata": map[string]any{"name": "broken"},
			"image":    map[string]any{"image": "fcvm.test/busybox:1"},
			"command":  []string{"/no/such/entrypoint"},
			"log_path": "broken.log",
			"linux":    map[string]any{},
		})
		r := c.crictl("create", podID, broken, pod)
		if r.code != 0 {
			t.Fatalf("create broken: %s", r)
		}
		id := strings.TrimSpace(r.stdout)
		if r := c.crictl("start", id); r.code == 0 || !strings.Contains(r.stderr, `/no/such/entrypoint\": no such file or directory in the image`) {
			t.Errorf("a pod container whose entrypoint is missing: want a clear error, got %s", r)
		}
		if r := c.crictl("rm", id); r.code != 0 {
			t.Errorf("rm broken: %s", r)
		}
		if r := c.crictl("runp", bad); r.code == 0 || !strings.Contains(r.stderr, "annotation fcvm.io/vcpus: unknown") {
			t.Errorf("pod with an unknown fcvm.io annotation: want a clear error, got %s", r)
		}
		if r := c.crictl("pods", "--name", "bad", "-q"); strings.TrimSpace(r.stdout) != "" {
			// CRI keeps a failed sandbox as NotReady; it must hold no VM.
			for _, id := range strings.Fields(r.stdout) {
				if vm := findVM(t, "ctrd-k8s.io-"+id); vm != nil {
					t.Errorf("failed pod %s left a VM: %+v", id, vm)
				}
				c.crictl("rmp", "-f", id)
			}
		}
	})

	// Stop and remove: the web container first, then exec into it fails.
	if r := c.crictl("stop", webID); r.code != 0 {
		t.Fatalf("stop web: %s", r)
	}
	if r := c.crictl("exec", "-s", webID, "true"); r.code == 0 || !strings.Contains(r.stderr, "CONTAINER_EXITED") {
		t.Errorf("exec into a stopped container: want a clear error, got %s", r)
	}
	for _, id := range ids {
		if r := c.crictl("rm", "-f", id); r.code != 0 {
			t.Errorf("rm %s: %s", id, r)
		}
	}
	if r := c.crictl("stopp", podID); r.code != 0 {
		t.Errorf("stopp: %s", r)
	}
	if r := c.crictl("rmp", podID); r.code != 0 {
		t.Errorf("rmp: %s", r)
	}
	if vm := findVM(t, "ctrd-k8s.io-"+podID); vm != nil {
		t.Errorf("the pod's VM left behind: %+v", vm)
	}
	deadline := time.Now().Add(time.Minute)
	for len(c.shims("")) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if pids := c.shims(""); len(pids) > 0 {
		t.Errorf("shims still running after rmp: %v", pids)
	}
	if ms := mountsUnder(c.dir); len(ms) > 0 {
		t.Errorf("mounts left behind: %v", ms)
	}
	if _, err := os.Stat(fmt.Sprintf("/run/netns/%s", podID)); err == nil {
		t.Errorf("the pod's network namespace is left")
	}
}
