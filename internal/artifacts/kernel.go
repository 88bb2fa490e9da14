package artifacts

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KernelArgs are kernel command-line arguments every guest boots with,
// whatever the VMM. They skip work Debian's generic kernel does at boot
// that a microVM does not need (measured with initcall_debug under TCG,
// where they were half of the kernel's time to init): the CMOS RTC probe
// waits 2 s for a device no microVM has (the agent sets the clock from
// the host); the crypto self-tests (0.9 s) and the SP800-108 KDF's own
// (0.3 s); and the kprobe tracer's boot setup (0.27 s). Names a kernel
// does not have are ignored, so a user's own kernel boots with them too.
const KernelArgs = "initcall_blacklist=cmos_init,crypto_kdf108_init,init_kprobe_trace cryptomgr.notests=1"

// debianKeyring is the keyring apt verifies the mirror's Release file
// with (package debian-archive-keyring).
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// kernelPart is a kernel ready in its final directory.
type kernelPart struct {
	vmlinux, bzImage, release, pkg, digest string
	reused                                 bool // already in place
}

// userKernel is a kernel file the user named.
type userKernel struct {
	path, sha string
}

// kernelKey returns the offline key deciding whether the kernel must be
// fetched again: where it comes from, not which version it turned out to
// be (that needs the mirror).
func (b *builder) kernelKey() (string, *userKernel, error) {
	if b.opts.KernelPath == "" {
		return digest("kernel-source", fmt.Sprint(KernelRecipe), "debian", b.opts.Mirror, b.opts.Suite, b.arch), nil, nil
	}
	abs, err := filepath.Abs(b.opts.KernelPath)
	if err != nil {
		return "", nil, err
	}
	sha, err := fileSHA256(abs)
	if err != nil {
		return "", nil, fmt.Errorf("read --kernel: %w", err)
	}
	return digest("kernel-source", fmt.Sprint(KernelRecipe), "file", sha), &userKernel{path: abs, sha: sha}, nil
}

func (b *builder) buildKernel(ctx context.Context, uk *userKernel) (kernelPart, error) {
	start := time.Now()
	work := filepath.Join(b.tmp, "kernel")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return kernelPart{}, err
	}
	var k kernelPart
	var err error
	if uk != nil {
		k, err = b.importKernel(uk, work)
	} else {
		k, err = b.debianKernel(ctx, work)
	}
	if err != nil {
		return kernelPart{}, err
	}
	final := filepath.Join(b.dir, "kernel-"+k.digest)
	if !k.reused {
		if err := b.install(work, final); err != nil {
			return kernelPart{}, err
		}
	}
	k.vmlinux = filepath.Join(final, "vmlinux")
	if k.bzImage != "" {
		k.bzImage = filepath.Join(final, "bzImage")
	}
	st, err := os.Stat(k.vmlinux)
	if err != nil {
		return kernelPart{}, fmt.Errorf("kernel: %w", err)
	}
	b.step("kernel", start, st.Size())
	if !k.reused {
		b.built("kernel")
	}
	b.progress("kernel: %s (%s) in %s", k.release, final, time.Since(start).Round(time.Millisecond))
	return k, nil
}

// importKernel copies the user's vmlinux, or extracts one from their
// bzImage, into work.
func (b *builder) importKernel(uk *userKernel, work string) (kernelPart, error) {
	data, err := os.ReadFile(uk.path)
	if err != nil {
		return kernelPart{}, fmt.Errorf("read --kernel: %w", err)
	}
	k := kernelPart{release: KernelRelease(data), digest: digest("kernel", fmt.Sprint(KernelRecipe), "file", uk.sha)}
	switch {
	case isELF(data):
		b.progress("kernel: using %s (ELF vmlinux)", uk.path)
	case isBzImage(data):
		b.progress("kernel: extracting vmlinux from %s", uk.path)
		vmlinux, err := ExtractVmlinux(data)
		if err != nil {
			return kernelPart{}, fmt.Errorf("read --kernel %s: %w", uk.path, err)
		}
		if err := os.WriteFile(filepath.Join(work, "bzImage"), data, 0o644); err != nil {
			return kernelPart{}, err
		}
		k.bzImage, data = "bzImage", vmlinux
	default:
		return kernelPart{}, fmt.Errorf("read --kernel %s: %w", uk.path, ErrNotKernel)
	}
	if err := os.WriteFile(filepath.Join(work, "vmlinux"), data, 0o644); err != nil {
		return kernelPart{}, err
	}
	return k, writeJSONAtomic(filepath.Join(work, "kernel.json"), map[string]string{
		"source": uk.path, "sha256": uk.sha, "release": k.release,
	})
}

// aptConfig is a private apt configuration: its own sources list, index
// and cache under dir, so the host's apt state and sources are neither
// read nor touched (its apt.conf.d, with any proxy, still applies).
type aptConfig struct {
	dir  string
	opts []string
}

func newAptConfig(dir, mirror, suite, arch string) (*aptConfig, error) {
	for _, d := range []string{"empty", "state/lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(debianKeyring); err != nil {
		return nil, fmt.Errorf("debian archive keyring: %w (apt-get install debian-archive-keyring)", err)
	}
	src := fmt.Sprintf("deb [signed-by=%s target=Packages pdiffs=no] %s %s main\n", debianKeyring, mirror, suite)
	if err := os.WriteFile(filepath.Join(dir, "sources.list"), []byte(src), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), nil, 0o644); err != nil {
		return nil, err
	}
	o := []string{
		"Dir::Etc::SourceList=" + filepath.Join(dir, "sources.list"),
		"Dir::Etc::SourceParts=" + filepath.Join(dir, "empty"),
		"Dir::Etc::Preferences=" + filepath.Join(dir, "empty", "preferences"),
		"Dir::Etc::PreferencesParts=" + filepath.Join(dir, "empty"),
		"Dir::State=" + filepath.Join(dir, "state"),
		"Dir::State::status=" + filepath.Join(dir, "status"),
		"Dir::Cache=" + filepath.Join(dir, "cache"),
		"APT::Architecture=" + arch,
		"APT::Architectures=" + arch,
		"Acquire::Languages=none",
		"Acquire::Retries=2",
		"Debug::NoLocking=1",
		"APT::Get::List-Cleanup=0",
	}
	if os.Geteuid() == 0 {
		// apt's _apt user cannot write into our root-owned temp dir.
		o = append(o, "APT::Sandbox::User=root")
	}
	c := &aptConfig{dir: dir}
	for _, x := range o {
		c.opts = append(c.opts, "-o", x)
	}
	return c, nil
}

func (c *aptConfig) run(ctx context.Context, b *builder, dir, tool string, args ...string) ([]byte, error) {
	return runTool(ctx, b.log, dir, []string{"LC_ALL=C"}, tool, append(append([]string{"-q"}, c.opts...), args...)...)
}

// debianKernel fetches the kernel package the linux-image-<arch>
// metapackage points at and unpacks vmlinux, bzImage and the guest's
// modules from it into work.
func (b *builder) debianKernel(ctx context.Context, work string) (kernelPart, error) {
	start := time.Now()
	// The unpacked package is 400 MB: drop it as soon as the kernel part
	// is made rather than when the whole build ends.
	defer func() {
		for _, d := range []string{"apt", "download", "deb"} {
			os.RemoveAll(filepath.Join(b.tmp, d))
		}
	}()
	apt, err := newAptConfig(filepath.Join(b.tmp, "apt"), b.opts.Mirror, b.opts.Suite, b.arch)
	if err != nil {
		return kernelPart{}, fmt.Errorf("fetch kernel: %w", err)
	}
	b.progress("kernel: reading the package index of %s %s", b.opts.Mirror, b.opts.Suite)
	out, err := apt.run(ctx, b, apt.dir, "apt-get", "update")
	if err == nil {
		// apt-get update only warns when a source is unreachable.
		lists, _ := filepath.Glob(filepath.Join(apt.dir, "state/lists/*_Packages*"))
		if len(lists) == 0 {
			err = &ToolError{Tool: "apt-get update", Err: errors.New("no package index downloaded"), Tail: tail(string(out), tailLines)}
		}
	}
	if err != nil {
		return kernelPart{}, fmt.Errorf("fetch kernel from %s (is the mirror reachable? set --mirror): %w", b.opts.Mirror, err)
	}
	meta := "linux-image-" + b.arch
	out, err = apt.run(ctx, b, apt.dir, "apt-cache", "depends", meta)
	if err != nil {
		return kernelPart{}, fmt.Errorf("resolve %s: %w", meta, err)
	}
	pkg := firstDepends(out, "linux-image-")
	if pkg == "" {
		return kernelPart{}, fmt.Errorf("resolve %s: no linux-image dependency in:\n%s", meta, tail(string(out), tailLines))
	}
	out, err = apt.run(ctx, b, apt.dir, "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return kernelPart{}, fmt.Errorf("resolve %s: %w", pkg, err)
	}
	fields := debFields(out)
	version, sha := fields["Version"], fields["SHA256"]
	if version == "" || sha == "" {
		return kernelPart{}, fmt.Errorf("resolve %s: no Version or SHA256 in the package index", pkg)
	}
	b.step("kernel index", start, 0)

	d := digest("kernel", fmt.Sprint(KernelRecipe), "debian", pkg, version, sha, strings.Join(GuestModules, ","))
	if final := filepath.Join(b.dir, "kernel-"+d); !b.opts.Force && exists(filepath.Join(final, "vmlinux")) {
		// Built before (an earlier setup that failed later on).
		release, _ := os.ReadFile(filepath.Join(final, "release"))
		if len(release) > 0 {
			b.progress("kernel: %s %s is already unpacked", pkg, version)
			return kernelPart{bzImage: "bzImage", release: string(release), pkg: pkg + " " + version, digest: d, reused: true}, nil
		}
	}

	start = time.Now()
	b.progress("kernel: downloading %s %s", pkg, version)
	dl := filepath.Join(b.tmp, "download")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return kernelPart{}, err
	}
	if _, err := apt.run(ctx, b, dl, "apt-get", "download", pkg+"="+version); err != nil {
		return kernelPart{}, fmt.Errorf("download %s: %w", pkg, err)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) != 1 {
		return kernelPart{}, fmt.Errorf("download %s: expected one .deb in %s, found %d", pkg, dl, len(debs))
	}
	if got, err := fileSHA256(debs[0]); err != nil || got != sha {
		return kernelPart{}, fmt.Errorf("download %s: sha256 %s, index says %s (%v)", pkg, got, sha, err)
	}
	st, _ := os.Stat(debs[0])
	b.step("kernel download", start, st.Size())

	start = time.Now()
	b.progress("kernel: unpacking %s", filepath.Base(debs[0]))
	unpacked := filepath.Join(b.tmp, "deb")
	if _, err := runTool(ctx, b.log, b.tmp, nil, "dpkg-deb", "-x", debs[0], unpacked); err != nil {
		return kernelPart{}, fmt.Errorf("unpack %s: %w", pkg, err)
	}
	b.step("kernel unpack", start, 0)

	start = time.Now()
	k, err := b.kernelFromTree(unpacked, work)
	if err != nil {
		return kernelPart{}, fmt.Errorf("kernel package %s %s: %w", pkg, version, err)
	}
	k.pkg, k.digest = pkg+" "+version, d
	b.step("kernel extract", start, 0)
	if err := os.WriteFile(filepath.Join(work, "release"), []byte(k.release), 0o644); err != nil {
		return kernelPart{}, err
	}
	return k, writeJSONAtomic(filepath.Join(work, "kernel.json"), map[string]string{
		"package": pkg, "version": version, "sha256": sha, "mirror": b.opts.Mirror, "suite": b.opts.Suite, "release": k.release,
	})
}

// kernelFromTree takes an unpacked linux-image package at root and writes
// vmlinux, bzImage, config and modules/<release>/ into work.
func (b *builder) kernelFromTree(root, work string) (kernelPart, error) {
	rels, _ := os.ReadDir(filepath.Join(root, "lib/modules"))
	if len(rels) != 1 {
		return kernelPart{}, fmt.Errorf("expected one lib/modules/<release> directory, found %d", len(rels))
	}
	release := rels[0].Name()
	bz, err := os.ReadFile(filepath.Join(root, "boot", "vmlinuz-"+release))
	if err != nil {
		return kernelPart{}, err
	}
	vmlinux, err := ExtractVmlinux(bz)
	if err != nil {
		return kernelPart{}, fmt.Errorf("extract vmlinux: %w", err)
	}
	for name, data := range map[string][]byte{"vmlinux": vmlinux, "bzImage": bz} {
		if err := os.WriteFile(filepath.Join(work, name), data, 0o644); err != nil {
			return kernelPart{}, err
		}
	}
	if cfg, err := os.ReadFile(filepath.Join(root, "boot", "config-"+release)); err == nil {
		if err := os.WriteFile(filepath.Join(work, "config"), cfg, 0o644); err != nil {
			return kernelPart{}, err
		}
	}
	src := filepath.Join(root, "lib/modules", release)
	mods, err := resolveModules(src, GuestModules)
	if err != nil {
		return kernelPart{}, err
	}
	if err := copyModules(src, filepath.Join(work, "modules", release), mods); err != nil {
		return kernelPart{}, err
	}
	b.log.Info("guest modules", "count", len(mods))
	return kernelPart{bzImage: "bzImage", release: release}, nil
}

// stripSignatures says whether guest modules lose their signatures; see
// stripModuleSignature.
var stripSignatures = true

// copyModules writes mods, uncompressed, under dst with a modules.dep
// naming only them and the kernel's modules.builtin.
func copyModules(src, dst string, mods []Module) error {
	for _, m := range mods {
		from := filepath.Join(src, m.Path)
		if !exists(from) {
			matches, _ := filepath.Glob(from + ".*")
			if len(matches) != 1 {
				return fmt.Errorf("module %s: %s not found", m.Name, from)
			}
			from = matches[0]
		}
		data, err := readModule(from)
		if err != nil {
			return err
		}
		if stripSignatures {
			data = stripModuleSignature(data)
		}
		to := filepath.Join(dst, m.Path)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(to, data, 0o644); err != nil {
			return err
		}
	}
	var dep bytes.Buffer
	if err := writeModulesDep(&dep, mods); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.dep"), dep.Bytes(), 0o644); err != nil {
		return err
	}
	if bi, err := os.ReadFile(filepath.Join(src, "modules.builtin")); err == nil {
		return os.WriteFile(filepath.Join(dst, "modules.builtin"), bi, 0o644)
	}
	return nil
}

// firstDepends returns the first "Depends: <prefix>..." package in
// apt-cache depends output.
func firstDepends(out []byte, prefix string) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], prefix) {
			return f[1]
		}
	}
	return ""
}

// debFields parses the first stanza of a Debian control file.
func debFields(out []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}
