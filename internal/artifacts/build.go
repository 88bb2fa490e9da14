package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fcvm/fcvm/internal/atomicfile"
)

// BuildOptions says what to build. The zero value builds Debian bookworm's
// kernel and rootfs from the host's Debian mirror, with the fc-agent
// DefaultAgentPath finds.
type BuildOptions struct {
	// KernelPath is the user's own kernel (ELF vmlinux or x86 bzImage) to
	// use instead of Debian's. It must have virtio, ext4, overlay, fuse
	// and vsock built in: no modules are added for it.
	KernelPath string
	// Force rebuilds every part even when its inputs are unchanged, and
	// picks up a newer Debian kernel.
	Force bool
	// AgentPath is the static fc-agent binary that becomes /init. Build
	// refuses one that is not static (see CheckAgent).
	AgentPath string
	// Mirror is the Debian archive URL; default DefaultMirror().
	Mirror string
	// Suite is the Debian suite; default "bookworm".
	Suite string
	// Progress, when not nil, gets one line per step (pass the terminal,
	// or nil in a pipe).
	Progress io.Writer
	// Log gets debug detail; nil discards it.
	Log *slog.Logger
}

// DefaultSuite is the Debian release guests are built from.
const DefaultSuite = "bookworm"

// Result says what a Build did.
type Result struct {
	// UpToDate is true when nothing needed building.
	UpToDate bool `json:"up_to_date"`
	// Built names the parts built: "kernel", "initramfs", "rootfs".
	Built []string `json:"built,omitempty"`
	// Steps are the timed steps, in the order they finished.
	Steps []Step `json:"steps,omitempty"`
}

// Step is one timed step of a Build.
type Step struct {
	Name string        `json:"name"`
	Took time.Duration `json:"took_ns"`
	Size int64         `json:"size,omitempty"` // bytes of what it made, if a file
}

// builder carries one Build's state across its parts.
type builder struct {
	dir  string // <data>/artifacts
	tmp  string // this build's temp dir under dir
	opts BuildOptions
	arch string // Debian architecture
	log  *slog.Logger

	mu     sync.Mutex // guards the fields below
	result Result
}

func (b *builder) progress(format string, args ...any) {
	b.log.Info(fmt.Sprintf(format, args...))
	if b.opts.Progress == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(b.opts.Progress, "setup: "+format+"\n", args...)
}

func (b *builder) step(name string, start time.Time, size int64) {
	took := time.Since(start)
	b.log.Info("setup step", "step", name, "took", took.Round(time.Millisecond), "size", size)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.result.Steps = append(b.result.Steps, Step{Name: name, Took: took, Size: size})
}

func (b *builder) built(part string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.result.Built = append(b.result.Built, part)
}

// debianArch maps GOARCH to Debian's architecture name.
func debianArch() (string, error) {
	switch runtime.GOARCH {
	case "amd64":
		return "amd64", nil
	}
	return "", fmt.Errorf("fcvm setup builds guests for amd64 hosts only, not %s", runtime.GOARCH)
}

// Build makes the guest artifacts under dataDir, reusing every part whose
// inputs are unchanged, and makes them the current set. See the package
// documentation for what it builds and how it fails.
func Build(ctx context.Context, dataDir string, opts BuildOptions) (Set, Result, error) {
	if opts.Suite == "" {
		opts.Suite = DefaultSuite
	}
	if opts.Mirror == "" {
		opts.Mirror = DefaultMirror()
	}
	opts.Mirror = strings.TrimRight(opts.Mirror, "/")
	if opts.AgentPath == "" {
		opts.AgentPath = DefaultAgentPath()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	arch, err := debianArch()
	if err != nil {
		return Set{}, Result{}, err
	}
	b := &builder{dir: artifactsDir(dataDir), opts: opts, arch: arch, log: opts.Log}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return Set{}, Result{}, fmt.Errorf("setup: %w", err)
	}
	unlock, err := lockDir(ctx, b.dir, func() { b.progress("waiting for another fcvm setup to finish") })
	if err != nil {
		return Set{}, Result{}, err
	}
	defer unlock()
	b.removeStaleTemp()

	set, err := b.build(ctx)
	return set, b.result, err
}

func (b *builder) build(ctx context.Context) (Set, error) {
	if err := CheckAgent(b.opts.AgentPath); err != nil {
		return Set{}, err
	}
	agentSHA, err := fileSHA256(b.opts.AgentPath)
	if err != nil {
		return Set{}, fmt.Errorf("read fc-agent: %w", err)
	}
	kernelKey, userKernel, err := b.kernelKey()
	if err != nil {
		return Set{}, err
	}
	rootfsDigest := b.rootfsDigest()

	cur, curErr := readManifest(b.dir)
	have := curErr == nil
	needKernel := b.opts.Force || !have || cur.KernelKey != kernelKey || !exists(cur.Set.Kernel)
	needRootfs := b.opts.Force || !have || cur.Set.RootfsDigest != rootfsDigest || !exists(cur.Set.Rootfs)
	needInitrd := needKernel || cur.AgentSHA != agentSHA || !exists(cur.Set.Initrd)
	if !needKernel && !needRootfs && !needInitrd {
		b.result.UpToDate = true
		return cur.Set, nil
	}
	if needRootfs && os.Geteuid() != 0 {
		return Set{}, fmt.Errorf("build rootfs: debootstrap needs root: run `sudo fcvm setup`")
	}

	b.tmp, err = os.MkdirTemp(b.dir, ".tmp-")
	if err != nil {
		return Set{}, fmt.Errorf("setup: %w", err)
	}
	defer b.removeTemp(b.tmp)

	set := cur.Set
	if !have {
		set = Set{}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if needKernel {
			k, err := b.buildKernel(gctx, userKernel)
			if err != nil {
				return err
			}
			set.Kernel, set.BzImage, set.KernelVersion, set.KernelPackage, set.KernelDigest = k.vmlinux, k.bzImage, k.release, k.pkg, k.digest
		}
		return b.buildInitrd(gctx, &set, agentSHA, needInitrd)
	})
	if needRootfs {
		g.Go(func() error {
			p, err := b.buildRootfs(gctx, rootfsDigest)
			set.Rootfs, set.RootfsDigest = p, rootfsDigest
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return Set{}, err
	}
	// Some steps do not watch ctx; an interrupted setup must not switch
	// the current set even if they finished.
	if err := ctx.Err(); err != nil {
		return Set{}, fmt.Errorf("setup: %w", err)
	}
	set.Digest = digest("set", set.KernelDigest, set.InitrdDigest, set.RootfsDigest)
	m := manifest{Set: set, KernelKey: kernelKey, AgentSHA: agentSHA}
	if err := writeJSONAtomic(filepath.Join(b.dir, manifestName), m); err != nil {
		return Set{}, fmt.Errorf("setup: %w", err)
	}
	return set, nil
}

// buildInitrd builds the initramfs for set's kernel unless one with the
// same digest is already in place.
func (b *builder) buildInitrd(ctx context.Context, set *Set, agentSHA string, need bool) error {
	d := digest("initrd", fmt.Sprint(InitrdRecipe), set.KernelDigest, agentSHA, strings.Join(GuestModules, ","), initrdCompression)
	final := filepath.Join(b.dir, "initrd-"+d)
	path := filepath.Join(final, "initrd.cpio")
	if !need {
		return nil
	}
	if !b.opts.Force && exists(path) {
		// The same inputs were built before (say, fc-agent changed and
		// changed back).
		set.Initrd, set.InitrdDigest = path, d
		return nil
	}
	work := filepath.Join(b.tmp, "initrd")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	start := time.Now()
	b.progress("initramfs: packing fc-agent and kernel modules")
	size, err := writeInitramfs(ctx, filepath.Join(work, "initrd.cpio"), b.opts.AgentPath, set.modulesDir())
	if err != nil {
		return fmt.Errorf("build initramfs: %w", err)
	}
	if err := b.install(work, final); err != nil {
		return err
	}
	b.step("initramfs", start, size)
	b.built("initramfs")
	b.progress("initramfs: %s, %s in %s", final, humanSize(size), time.Since(start).Round(time.Millisecond))
	set.Initrd, set.InitrdDigest = path, d
	return nil
}

// modulesDir is the kernel's /lib/modules/<release> tree of guest
// modules, or "" when the kernel has none.
func (s Set) modulesDir() string {
	d := filepath.Join(filepath.Dir(s.Kernel), "modules", s.KernelVersion)
	if s.KernelVersion == "" || !exists(d) {
		return ""
	}
	return d
}

// install renames a finished part from the temp dir to its final place.
// A part already there (Force, or an identical rebuild) is moved aside
// into the temp dir first, where the deferred cleanup removes it; VMs
// that have its files open keep them.
func (b *builder) install(work, final string) error {
	if exists(final) {
		old, err := os.MkdirTemp(b.tmp, "old-")
		if err != nil {
			return err
		}
		if err := os.Rename(final, filepath.Join(old, "part")); err != nil {
			return fmt.Errorf("replace %s: %w", final, err)
		}
	}
	if err := atomicfile.SyncDir(work); err != nil {
		return err
	}
	if err := os.Rename(work, final); err != nil {
		return fmt.Errorf("install %s: %w", final, err)
	}
	return atomicfile.SyncDir(b.dir)
}

// removeStaleTemp removes temp dirs that a crashed or killed build left.
// The caller holds the lock, so no live build owns them.
func (b *builder) removeStaleTemp() {
	old, _ := filepath.Glob(filepath.Join(b.dir, ".tmp-*"))
	for _, d := range old {
		b.log.Info("removing a crashed setup's temp dir", "dir", d)
		b.removeTemp(d)
	}
}

func (b *builder) removeTemp(dir string) {
	// debootstrap mounts /proc and /sys inside its target; an
	// interrupted run can leave them, and RemoveAll must not walk them.
	if err := unmountUnder(dir); err != nil {
		b.log.Warn("unmount leftovers", "dir", dir, "err", err)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		b.log.Warn("remove temp dir", "dir", dir, "err", err)
	}
}

// digest hashes its parts, separated so that ("ab","c") differs from
// ("a","bc"), into the 16 hex digits that name a part's directory.
func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func exists(path string) bool {
	if path == "" {
		return false
	}
	_, err := os.Stat(path)
	return err == nil
}

// writeJSONAtomic writes v to path so that readers see the old or the new
// file, never a torn one.
func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
