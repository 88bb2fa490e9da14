package artifacts

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCacheDir is where tests keep the Debian kernel package between
// runs: $FCVM_TEST_CACHE, else <user cache dir>/fcvm-test.
func testCacheDir(t testing.TB) string {
	dir := os.Getenv("FCVM_TEST_CACHE")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			t.Fatalf("no cache dir: %v (set FCVM_TEST_CACHE)", err)
		}
		dir = filepath.Join(base, "fcvm-test")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var debianTreeOnce sync.Mutex

// debianKernelTree returns an unpacked Debian linux-image package,
// downloading it through the same private apt configuration Build uses
// the first time and reusing it afterwards.
func debianKernelTree(t testing.TB) string {
	debianTreeOnce.Lock()
	defer debianTreeOnce.Unlock()
	cache := filepath.Join(testCacheDir(t), "linux-image")
	tree := filepath.Join(cache, "tree")
	if _, err := os.Stat(filepath.Join(cache, "done")); err == nil {
		return tree
	}
	os.RemoveAll(cache)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &builder{tmp: cache, opts: BuildOptions{Mirror: DefaultMirror(), Suite: DefaultSuite}, arch: "amd64", log: testLogger(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	apt, err := newAptConfig(filepath.Join(cache, "apt"), b.opts.Mirror, b.opts.Suite, b.arch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apt.run(ctx, b, apt.dir, "apt-get", "update"); err != nil {
		t.Fatal(err)
	}
	out, err := apt.run(ctx, b, apt.dir, "apt-cache", "depends", "linux-image-amd64")
	if err != nil {
		t.Fatal(err)
	}
	pkg := firstDepends(out, "linux-image-")
	if pkg == "" {
		t.Fatalf("no kernel package in %s", out)
	}
	if _, err := apt.run(ctx, b, cache, "apt-get", "download", pkg); err != nil {
		t.Fatal(err)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("downloaded %v", debs)
	}
	if _, err := runTool(ctx, b.log, cache, nil, "dpkg-deb", "-x", debs[0], tree); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(cache, "apt"))
	os.Remove(debs[0]) // the tree is what tests use
	if err := os.WriteFile(filepath.Join(cache, "done"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return tree
}

func debianRelease(t testing.TB, tree string) string {
	rels, err := os.ReadDir(filepath.Join(tree, "lib/modules"))
	if err != nil || len(rels) != 1 {
		t.Fatalf("lib/modules: %v %v", rels, err)
	}
	return rels[0].Name()
}

// TestExtractVmlinuxDebian extracts the ELF vmlinux from Debian's real
// bzImage and checks it byte for byte against the xz tool's output.
func TestExtractVmlinuxDebian(t *testing.T) {
	tree := debianKernelTree(t)
	rel := debianRelease(t, tree)
	bz, err := os.ReadFile(filepath.Join(tree, "boot", "vmlinuz-"+rel))
	if err != nil {
		t.Fatal(err)
	}
	if got := KernelRelease(bz); got != rel {
		t.Errorf("KernelRelease(bzImage) = %q, want %q", got, rel)
	}
	start := time.Now()
	vmlinux, err := ExtractVmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extracted %d-byte vmlinux from a %d-byte bzImage in %s", len(vmlinux), len(bz), time.Since(start))
	if got := KernelRelease(vmlinux); got != rel {
		t.Errorf("KernelRelease(vmlinux) = %q, want %q", got, rel)
	}

	// The reference: the payload the setup header points at, through xz.
	start0 := (int(bz[hdrSetupSects])+1)*512 + int(binary.LittleEndian.Uint32(bz[hdrPayloadOffset:]))
	n := int(binary.LittleEndian.Uint32(bz[hdrPayloadLength:]))
	cmd := exec.Command("xz", "-dc")
	cmd.Stdin = bytes.NewReader(bz[start0 : start0+n-4])
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz -dc (apt-get install xz-utils): %v", err)
	}
	if sha256.Sum256(vmlinux) != sha256.Sum256(want) {
		t.Fatalf("vmlinux differs from xz -dc's output (%d vs %d bytes)", len(vmlinux), len(want))
	}
}

func TestExtractVmlinuxRejectsGarbage(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("hello"), make([]byte, 4096)} {
		if _, err := ExtractVmlinux(in); err == nil {
			t.Errorf("ExtractVmlinux(%d bytes) succeeded", len(in))
		}
	}
	// A header that points past the end of the file.
	bz := make([]byte, 0x400)
	copy(bz[hdrMagic:], "HdrS")
	binary.LittleEndian.PutUint16(bz[hdrVersion:], 0x20f)
	bz[hdrSetupSects] = 1
	binary.LittleEndian.PutUint32(bz[hdrPayloadLength:], 1<<20)
	if _, err := ExtractVmlinux(bz); err == nil {
		t.Error("ExtractVmlinux accepted a payload beyond the file")
	}
}

// TestResolveModulesMatchesDepmod resolves the guest's modules from the
// real package and compares each one's dependencies with what depmod
// computes from the same tree.
func TestResolveModulesMatchesDepmod(t *testing.T) {
	tree := debianKernelTree(t)
	rel := debianRelease(t, tree)
	dir := filepath.Join(tree, "lib/modules", rel)
	mods, err := resolveModules(dir, GuestModules)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runTool(context.Background(), testLogger(t), "", nil, "depmod", "-b", tree, rel); err != nil {
		t.Fatalf("depmod (apt-get install kmod): %v", err)
	}
	depmod := readDepFile(t, filepath.Join(dir, "modules.dep"))

	var buf bytes.Buffer
	if err := writeModulesDep(&buf, mods); err != nil {
		t.Fatal(err)
	}
	ours := parseDep(t, buf.String())
	if len(ours) != len(mods) {
		t.Fatalf("our modules.dep has %d lines for %d modules", len(ours), len(mods))
	}
	loaded := map[string]bool{}
	for _, m := range mods {
		want, ok := depmod[m.Path]
		if !ok {
			t.Errorf("%s not in depmod's modules.dep", m.Path)
			continue
		}
		if got := ours[m.Path]; strings.Join(sorted(got), " ") != strings.Join(sorted(want), " ") {
			t.Errorf("%s: deps %v, depmod says %v", m.Name, got, want)
		}
		for _, d := range m.Deps {
			if !loaded[d] {
				t.Errorf("%s comes before its dependency %s", m.Name, d)
			}
		}
		loaded[m.Name] = true
	}
	for _, w := range GuestModules {
		if !loaded[modName(w)] {
			t.Errorf("wanted module %s not resolved", w)
		}
	}
	if _, err := resolveModules(dir, []string{"no_such_module"}); err == nil {
		t.Error("resolving a missing module succeeded")
	}
}

func readDepFile(t *testing.T, path string) map[string][]string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseDep(t, string(b))
}

func parseDep(t *testing.T, s string) map[string][]string {
	m := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		p, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			t.Fatalf("bad modules.dep line %q", sc.Text())
		}
		m[p] = strings.Fields(deps)
	}
	return m
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

func TestStripModuleSignature(t *testing.T) {
	tree := debianKernelTree(t)
	rel := debianRelease(t, tree)
	ko, err := os.ReadFile(filepath.Join(tree, "lib/modules", rel, "kernel/fs/ext4/ext4.ko"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(ko, []byte(moduleSigMagic)) {
		t.Fatal("Debian's ext4.ko is not signed: the test's premise is gone")
	}
	stripped := stripModuleSignature(ko)
	if len(stripped) >= len(ko)-len(moduleSigMagic)-12 || bytes.Contains(stripped[len(stripped)-64:], []byte("Module signature")) {
		t.Fatalf("stripped %d of %d bytes", len(ko)-len(stripped), len(ko))
	}
	t.Logf("signature and trailer: %d bytes", len(ko)-len(stripped))
	deps, err := modinfoDepends(stripped)
	if err != nil || strings.Join(sorted(deps), ",") != "crc16,jbd2,mbcache" {
		t.Errorf("stripped ext4.ko: depends %v, %v", deps, err)
	}
	if again := stripModuleSignature(stripped); !bytes.Equal(again, stripped) {
		t.Error("stripping an unsigned module changed it")
	}
	bad := append(bytes.Repeat([]byte{0xff}, 20), moduleSigMagic...)
	if got := stripModuleSignature(bad); !bytes.Equal(got, bad) {
		t.Error("a signature length beyond the file was trusted")
	}
}
