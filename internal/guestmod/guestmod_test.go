package guestmod

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// modulesDep is the modules.dep fcvm setup wrote for Debian 6.1.
const modulesDep = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/crypto/crc32c_generic.ko:
kernel/fs/fuse/fuse.ko:
`

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/fs/fuse/fuse.ko":              "fuse",
		"crc32c-intel.ko.xz":                  "crc32c_intel",
		"kernel/net/vmw_vsock/vsock.ko.zst":   "vsock",
		"virtio_mmio":                         "virtio_mmio",
		"/lib/modules/x/kernel/a/b-c_d.ko.gz": "b_c_d",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWavesOrder(t *testing.T) {
	mods, err := ParseModulesDep(strings.NewReader(modulesDep))
	if err != nil {
		t.Fatal(err)
	}
	waves, err := Waves(mods)
	if err != nil {
		t.Fatal(err)
	}
	var names [][]string
	wave := map[string]int{}
	for i, w := range waves {
		var n []string
		for _, m := range w {
			n = append(n, m.Name)
			wave[m.Name] = i
		}
		names = append(names, n)
	}
	want := [][]string{
		{"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "failover", "jbd2", "mbcache", "crc16", "crc32c_generic", "fuse"},
		{"virtio_mmio", "virtio_pci", "virtio_blk", "net_failover", "ext4"},
		{"virtio_net"},
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("waves (-want +got):\n%s", diff)
	}
	for _, m := range mods {
		for _, d := range m.Deps {
			if wave[d] >= wave[m.Name] {
				t.Errorf("%s (wave %d) does not come after %s (wave %d)", m.Name, wave[m.Name], d, wave[d])
			}
		}
	}
}

func TestWavesCycle(t *testing.T) {
	mods, _ := ParseModulesDep(strings.NewReader("a.ko: b.ko\nb.ko: a.ko\nc.ko:\n"))
	if _, err := Waves(mods); err == nil {
		t.Fatal("a cycle was accepted")
	}
	// A dependency modules.dep does not list is taken as built in.
	mods, _ = ParseModulesDep(strings.NewReader("a.ko: builtin.ko\n"))
	if w, err := Waves(mods); err != nil || len(w) != 1 {
		t.Fatalf("Waves = %v, %v", w, err)
	}
}

func TestParseModulesDepErrors(t *testing.T) {
	if _, err := ParseModulesDep(strings.NewReader("no colon here\n")); err == nil {
		t.Error("a line without a colon was accepted")
	}
	mods, err := ParseModulesDep(strings.NewReader("# comment\n\n a.ko:  \n"))
	if err != nil || len(mods) != 1 || mods[0].Name != "a" {
		t.Errorf("got %v, %v", mods, err)
	}
}

func TestCmdlineParams(t *testing.T) {
	cmdline := `console=ttyS0 reboot=k virtio_mmio.device=4K@0xd0000000:5 virtio-mmio.device=4K@0xd0001000:6 ` +
		`ip=10.0.0.2::10.0.0.1:255.255.255.0 foo.bar="a b" tsc_early_khz=2096009 .x=1 y.=2 -- init.arg=1`
	got := CmdlineParams(cmdline)
	want := map[string]string{
		"virtio_mmio": "device=4K@0xd0000000:5 device=4K@0xd0001000:6",
		"foo":         `bar="a b"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CmdlineParams (-want +got):\n%s", diff)
	}
}

// TestLoadOrderAndParams runs Load over a modules tree with a LoadFunc
// that records calls, checking each module is loaded once, after its
// dependencies, with its command-line parameters.
func TestLoadOrderAndParams(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(modulesDep), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	loaded := map[string]bool{}
	params := map[string]string{}
	mods, _ := ParseModulesDep(strings.NewReader(modulesDep))
	deps := map[string][]string{}
	for _, m := range mods {
		deps[m.Name] = m.Deps
	}
	load := func(path, p string) error {
		mu.Lock()
		defer mu.Unlock()
		name := Name(path)
		if !strings.HasPrefix(path, dir+"/kernel/") {
			t.Errorf("load %s: not under %s", path, dir)
		}
		if loaded[name] {
			t.Errorf("%s loaded twice", name)
		}
		for _, d := range deps[name] {
			if !loaded[d] {
				t.Errorf("%s loaded before its dependency %s", name, d)
			}
		}
		loaded[name] = true
		params[name] = p
		return nil
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if err := Load(log, dir, "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5", load); err != nil {
		t.Fatal(err)
	}
	if len(loaded) != len(mods) {
		t.Errorf("loaded %d modules, want %d", len(loaded), len(mods))
	}
	if params["virtio_mmio"] != "device=4K@0xd0000000:5" || params["ext4"] != "" {
		t.Errorf("params = %v", params)
	}
}

func TestLoadFailures(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(modulesDep), 0o644)
	log := slog.New(slog.DiscardHandler)
	boom := errors.New("boom")
	var mu sync.Mutex
	var calls []string
	err := Load(log, dir, "", func(path, _ string) error {
		mu.Lock()
		calls = append(calls, Name(path))
		mu.Unlock()
		switch Name(path) {
		case "virtio_ring":
			return boom
		case "fuse":
			return errNoDevice
		}
		return nil
	})
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("Load = %v, want *LoadError", err)
	}
	if !errors.Is(le.Failed["virtio_ring"], boom) {
		t.Errorf("virtio_ring: %v", le.Failed["virtio_ring"])
	}
	for _, skipped := range []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_pci"} {
		if !errors.Is(le.Failed[skipped], ErrSkipped) {
			t.Errorf("%s: %v, want ErrSkipped", skipped, le.Failed[skipped])
		}
	}
	if le.Failed["fuse"] != nil || le.Failed["ext4"] != nil {
		t.Errorf("unrelated modules failed: %v", le.Failed)
	}
	if strings.Contains(strings.Join(calls, " "), "virtio_blk") {
		t.Errorf("virtio_blk was tried after its dependency failed: %v", calls)
	}
}

func TestLoadNoModules(t *testing.T) {
	called := false
	err := Load(slog.New(slog.DiscardHandler), filepath.Join(t.TempDir(), "absent"), "", func(string, string) error {
		called = true
		return nil
	})
	if err != nil || called {
		t.Fatalf("Load without modules: %v, called %v", err, called)
	}
}

// TestFinitModuleRejectsGarbage hands the real syscall a file that is
// not a module: it must fail (ENOEXEC, or EPERM where module loading is
// locked down), not report success.
func TestFinitModuleRejectsGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "garbage.ko")
	os.WriteFile(p, []byte("not an ELF module"), 0o644)
	err := finitModule(p, "")
	if err == nil {
		t.Fatal("finit_module of garbage succeeded")
	}
	if !errors.Is(err, unix.ENOEXEC) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		t.Errorf("finit_module of garbage: %v", err)
	}
	t.Logf("finit_module of garbage: %v", err)
}

func FuzzParse(f *testing.F) {
	f.Add(modulesDep, `virtio_mmio.device=4K@0xd0000000:5 foo.bar="a b" -- x.y=1`)
	f.Fuzz(func(t *testing.T, dep, cmdline string) {
		if mods, err := ParseModulesDep(strings.NewReader(dep)); err == nil {
			Waves(mods)
		}
		for mod, p := range CmdlineParams(cmdline) {
			if mod == "" || p == "" {
				t.Fatalf("empty module or params: %q %q", mod, p)
			}
		}
	})
}

// TestImports keeps guestmod fit for the static guest agent: the standard
// library and golang.org/x/sys only.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/fcvm/fcvm/internal/guestmod" && !strings.HasPrefix(p, "golang.org/x/sys/") {
			t.Errorf("guestmod depends on %s", p)
		}
	}
}
