package artifacts

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestCPIORoundTrip writes an archive and unpacks it with GNU cpio.
func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("dev", 0o755))
	must(w.CharDev("dev/console", 0o600, 5, 1))
	must(w.Dir("lib", 0o755))
	must(w.Dir("lib/modules", 0o700))
	must(w.File("init", 0o755, 5, strings.NewReader("hello")))
	must(w.File("lib/modules/odd", 0o644, 3, strings.NewReader("abc")))
	must(w.File("lib/modules/empty", 0o600, 0, strings.NewReader("")))
	must(w.Symlink("lib/link", "modules/odd"))
	must(w.Close())
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}

	list := exec.Command("cpio", "-t", "--quiet")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.Output()
	if err != nil {
		t.Fatalf("cpio -t (apt-get install cpio): %v", err)
	}
	want := []string{"dev", "dev/console", "lib", "lib/modules", "init", "lib/modules/odd", "lib/modules/empty", "lib/link"}
	if diff := cmp.Diff(want, strings.Fields(string(out))); diff != "" {
		t.Errorf("cpio -t (-want +got):\n%s", diff)
	}

	dir := t.TempDir()
	extract := exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames")
	extract.Dir = dir
	extract.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for name, content := range map[string]string{"init": "hello", "lib/modules/odd": "abc", "lib/modules/empty": ""} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != content {
			t.Errorf("%s = %q, %v; want %q", name, got, err, content)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("init mode %v, %v", st.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "lib/link")); err != nil || target != "modules/odd" {
		t.Errorf("lib/link -> %q, %v", target, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "dev/console"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 5<<8|1 {
		t.Errorf("dev/console mode %o rdev %#x, want char 5:1", st.Mode, st.Rdev)
	}

	// Equal input, equal bytes.
	var again bytes.Buffer
	w2 := newCPIOWriter(&again)
	must(w2.Dir("dev", 0o755))
	must(w2.CharDev("dev/console", 0o600, 5, 1))
	must(w2.Dir("lib", 0o755))
	must(w2.Dir("lib/modules", 0o700))
	must(w2.File("init", 0o755, 5, strings.NewReader("hello")))
	must(w2.File("lib/modules/odd", 0o644, 3, strings.NewReader("abc")))
	must(w2.File("lib/modules/empty", 0o600, 0, strings.NewReader("")))
	must(w2.Symlink("lib/link", "modules/odd"))
	must(w2.Close())
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("the same entries gave different archives")
	}
}

func TestCPIOShortFile(t *testing.T) {
	w := newCPIOWriter(&bytes.Buffer{})
	if err := w.File("x", 0o644, 10, strings.NewReader("short")); err == nil {
		t.Fatal("a file shorter than its size was accepted")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed write succeeded")
	}
}

func TestDigestStable(t *testing.T) {
	// Pinned: a change here renames every artifact directory, which is
	// only right together with a Recipe bump.
	if got, want := digest("a", "b"), digest("a", "b"); got != want {
		t.Fatalf("digest is not deterministic: %s %s", got, want)
	}
	if got := digest("kernel", "1", "x"); got != "83e51f1187a3c9b4" {
		t.Errorf("digest(kernel, 1, x) = %s; its encoding changed", got)
	}
	if digest("ab", "c") == digest("a", "bc") {
		t.Error("digest does not separate its parts")
	}
	b1 := &builder{opts: BuildOptions{Mirror: "http://m/debian", Suite: "bookworm"}, arch: "amd64"}
	b2 := &builder{opts: BuildOptions{Mirror: "http://m/debian", Suite: "bookworm"}, arch: "amd64"}
	if b1.rootfsDigest() != b2.rootfsDigest() {
		t.Error("rootfs digest differs for equal inputs")
	}
	b2.opts.Mirror = "http://other/debian"
	if b1.rootfsDigest() == b2.rootfsDigest() {
		t.Error("rootfs digest ignores the mirror")
	}
	k1, _, _ := b1.kernelKey()
	k2, _, _ := b2.kernelKey()
	if k1 == k2 {
		t.Error("kernel key ignores the mirror")
	}
}

func TestDefaultMirror(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "sources.list.d", "a.list"),
		[]byte("# comment\ndeb [arch=amd64] https://example.org/apt stable main\ndeb-src http://src/debian bookworm main\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sources.list.d", "debian.sources"), []byte(`Types: deb
URIs: http://deb.example.net/debian-security
Suites: bookworm-security

Types: deb-src
URIs: http://src.example.net/debian

Types: deb
URIs: http://mirror.example.net/debian/
Suites: bookworm
`), 0o644)
	if got := defaultMirror(dir); got != "http://mirror.example.net/debian" {
		t.Errorf("defaultMirror = %q", got)
	}
	os.WriteFile(filepath.Join(dir, "sources.list"), []byte("deb http://first.example.net/debian bookworm main\n"), 0o644)
	if got := defaultMirror(dir); got != "http://first.example.net/debian" {
		t.Errorf("defaultMirror with sources.list = %q", got)
	}
	if got := defaultMirror(t.TempDir()); got != FallbackMirror {
		t.Errorf("defaultMirror of nothing = %q", got)
	}
}

// fakeAgent writes a small static ELF executable standing in for
// fc-agent, different for each content.
func fakeAgent(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "fc-agent")
	if err := os.WriteFile(p, testELF{typ: elf.ET_EXEC, machine: elf.EM_X86_64}.bytes(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// seedRootfs makes the current set's rootfs look built for opts, so a
// Build touches only the kernel and initramfs (and no network).
func seedRootfs(t *testing.T, data string, opts BuildOptions) {
	b := &builder{opts: opts, arch: "amd64"}
	if b.opts.Suite == "" {
		b.opts.Suite = DefaultSuite
	}
	d := b.rootfsDigest()
	dir := filepath.Join(artifactsDir(data), "rootfs-"+d)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs.ext4"), []byte("seeded"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := manifest{Set: Set{Rootfs: filepath.Join(dir, "rootfs.ext4"), RootfsDigest: d}}
	if err := writeJSONAtomic(filepath.Join(artifactsDir(data), manifestName), m); err != nil {
		t.Fatal(err)
	}
}

// listArtifacts names what is in the artifacts dir, hidden entries
// included, but not the lock file.
func listArtifacts(t *testing.T, data string) []string {
	ents, err := os.ReadDir(artifactsDir(data))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != ".lock" {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestBuildUserKernelIncremental runs Build with a user's bzImage (Debian's,
// from the test cache) over a seeded rootfs: the first build makes the
// kernel and initramfs, the second is a no-op, a new fc-agent rebuilds
// only the initramfs, and Load finds the result.
func TestBuildUserKernelIncremental(t *testing.T) {
	tree := debianKernelTree(t)
	bz := filepath.Join(tree, "boot", "vmlinuz-"+debianRelease(t, tree))
	data := t.TempDir()
	opts := BuildOptions{KernelPath: bz, AgentPath: fakeAgent(t, "agent v1"), Mirror: "http://127.0.0.1:9/debian", Log: testLogger(t)}
	seedRootfs(t, data, opts)
	ctx := context.Background()

	if _, err := Load(data); err == nil {
		t.Fatal("Load of a set without kernel succeeded")
	}
	var progress bytes.Buffer
	opts.Progress = &progress
	set, res, err := Build(ctx, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"kernel", "initramfs"}, res.Built); diff != "" || res.UpToDate {
		t.Errorf("first build: built (-want +got)\n%s up to date %v", diff, res.UpToDate)
	}
	if !strings.Contains(progress.String(), "setup: kernel: extracting vmlinux") {
		t.Errorf("progress lacks the kernel step:\n%s", progress.String())
	}
	if set.KernelVersion != debianRelease(t, tree) || set.BzImage == "" || set.Digest == "" {
		t.Errorf("set = %+v", set)
	}
	vmlinux, _ := os.ReadFile(set.Kernel)
	if !isELF(vmlinux) {
		t.Error("Set.Kernel is not ELF")
	}
	loaded, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(set, loaded); diff != "" {
		t.Errorf("Load (-built +loaded):\n%s", diff)
	}

	set2, res, err := Build(ctx, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.UpToDate || len(res.Built) != 0 || set2 != set {
		t.Errorf("second build: %+v, set changed %v", res, set2 != set)
	}

	opts.AgentPath = fakeAgent(t, "agent v2")
	set3, res, err := Build(ctx, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"initramfs"}, res.Built); diff != "" {
		t.Errorf("agent change rebuilt (-want +got)\n%s", diff)
	}
	if set3.Kernel != set.Kernel || set3.Rootfs != set.Rootfs || set3.Initrd == set.Initrd || set3.Digest == set.Digest {
		t.Errorf("agent change: before %+v after %+v", set, set3)
	}
	for _, n := range listArtifacts(t, data) {
		if strings.HasPrefix(n, ".tmp-") {
			t.Errorf("temp dir %s left behind", n)
		}
	}
}

// TestBuildFailuresLeaveNothing checks that bad input fails with a clear
// error and leaves the artifacts dir as it was.
func TestBuildFailuresLeaveNothing(t *testing.T) {
	ctx := context.Background()
	agent := fakeAgent(t, "agent")

	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/debian"
	l.Close()

	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, bytes.Repeat([]byte("not a kernel "), 1000), 0o644)

	for _, tc := range []struct {
		name string
		opts BuildOptions
		seed bool   // seed a rootfs so only the kernel is built
		want string // in the error
	}{
		{"missing kernel", BuildOptions{KernelPath: "/nonexistent/vmlinux"}, false, "read --kernel"},
		{"garbage kernel", BuildOptions{KernelPath: garbage}, true, "not an ELF vmlinux or x86 bzImage"},
		{"missing agent", BuildOptions{AgentPath: "/nonexistent/fc-agent"}, false, "FCVM_AGENT"},
		{"dynamic agent", BuildOptions{AgentPath: "/bin/true"}, false, "CGO_ENABLED=0 go build"},
		{"unreachable mirror", BuildOptions{Mirror: closed}, false, "is the mirror reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			if tc.opts.AgentPath == "" {
				tc.opts.AgentPath = agent
			}
			if tc.opts.Mirror == "" {
				tc.opts.Mirror = closed
			}
			tc.opts.Log = testLogger(t)
			if tc.seed {
				seedRootfs(t, data, tc.opts)
			}
			before := listArtifacts(t, data)
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			_, _, err := Build(ctx, data, tc.opts)
			if err == nil {
				t.Fatal("Build succeeded")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			after := listArtifacts(t, data)
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("artifacts dir changed (-before +after):\n%s", diff)
			}
			if _, err := Load(data); !tc.seed && !errors.Is(err, ErrNotSetUp) {
				t.Errorf("Load after a failed setup: %v, want ErrNotSetUp", err)
			}
		})
	}
}

// TestBuildLock checks that a second Build waits for the first's lock
// and gives up when its context ends.
func TestBuildLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(context.Background(), dir, func() {})
	if err != nil {
		t.Fatal(err)
	}
	waited := false
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := lockDir(ctx, dir, func() { waited = true }); err == nil || !waited {
		t.Fatalf("second lock: %v, waited %v", err, waited)
	}
	unlock()
	unlock2, err := lockDir(context.Background(), dir, func() {})
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}

// TestBuildConcurrentAndInterrupted runs two Builds at once (one builds,
// the other waits for the lock and finds everything up to date), then
// interrupts a third and checks it leaves the current set alone.
func TestBuildConcurrentAndInterrupted(t *testing.T) {
	tree := debianKernelTree(t)
	bz := filepath.Join(tree, "boot", "vmlinuz-"+debianRelease(t, tree))
	data := t.TempDir()
	opts := BuildOptions{KernelPath: bz, AgentPath: fakeAgent(t, "agent"), Mirror: "http://127.0.0.1:9/debian", Log: testLogger(t)}
	seedRootfs(t, data, opts)

	type out struct {
		set Set
		res Result
		err error
	}
	results := make(chan out, 2)
	for range 2 {
		go func() {
			s, r, err := Build(context.Background(), data, opts)
			results <- out{s, r, err}
		}()
	}
	a, b := <-results, <-results
	if a.err != nil || b.err != nil {
		t.Fatalf("concurrent builds: %v, %v", a.err, b.err)
	}
	if a.res.UpToDate == b.res.UpToDate || a.set != b.set {
		t.Errorf("want one build and one no-op with equal sets: %+v / %+v", a.res, b.res)
	}

	// Interrupt a build whose kernel is new (a vmlinux this time).
	vmlinux := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(vmlinux, mustRead(t, a.set.Kernel), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(vmlinux, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("different"))
	f.Close()
	before := mustRead(t, filepath.Join(artifactsDir(data), manifestName))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	opts.KernelPath = vmlinux
	if _, _, err := Build(ctx, data, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted build: %v, want context.Canceled", err)
	}
	if after := mustRead(t, filepath.Join(artifactsDir(data), manifestName)); !bytes.Equal(before, after) {
		t.Error("an interrupted build changed current.json")
	}
	for _, n := range listArtifacts(t, data) {
		if strings.HasPrefix(n, ".tmp-") {
			t.Errorf("temp dir %s left behind", n)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
