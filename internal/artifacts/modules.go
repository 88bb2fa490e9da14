package artifacts

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// GuestModules are the kernel modules the guest needs, by name. Their
// dependencies are added from each module's own modinfo. crc32c_generic
// is not a declared dependency of anything: ext4 and jbd2 ask the crypto
// API for "crc32c" at mount time, and the guest has no modprobe to load
// it on demand.
var GuestModules = []string{
	"virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
	"ext4", "crc32c_generic", "overlay", "fuse",
	"vsock", "vmw_vsock_virtio_transport",
}

// Module is one kernel module of an initramfs.
type Module struct {
	Name string   // normalised: '-' becomes '_'
	Path string   // relative to /lib/modules/<release>, uncompressed .ko
	Deps []string // direct dependencies, by name
}

func modName(file string) string {
	base := filepath.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// moduleTree indexes the modules under dir (a /lib/modules/<release>
// directory): name to path relative to dir.
func moduleTree(dir string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.Contains(d.Name(), ".ko") {
			rel, _ := filepath.Rel(dir, p)
			idx[modName(p)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules %s: %w", dir, err)
	}
	return idx, nil
}

// builtinModules reads modules.builtin: modules compiled into the kernel.
func builtinModules(dir string) (map[string]bool, error) {
	set := map[string]bool{}
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if os.IsNotExist(err) {
		return set, nil
	}
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Fields(string(b)) {
		set[modName(l)] = true
	}
	return set, nil
}

// readModule returns a module file's bytes, decompressing .ko.xz, .ko.zst
// and .ko.gz so the guest can hand them straight to finit_module.
func readModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".xz"):
		if r, err = xz.NewReader(f); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	case strings.HasSuffix(path, ".zst"):
		d, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		defer d.Close()
		r = d
	case strings.HasSuffix(path, ".gz"):
		if r, err = gzip.NewReader(f); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// modinfoDepends reads the "depends=" entry of a module's .modinfo
// section, which modpost writes at build time (depmod derives modules.dep
// from the same symbols).
func modinfoDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, modName(d))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// resolveModules returns want and everything it depends on, dependencies
// first, reading the modules under dir. Names that are built into the
// kernel are dropped; a name that is neither built in nor present is an
// error.
func resolveModules(dir string, want []string) ([]Module, error) {
	idx, err := moduleTree(dir)
	if err != nil {
		return nil, err
	}
	builtin, err := builtinModules(dir)
	if err != nil {
		return nil, err
	}
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s: dependency cycle through %s", name, from)
		case 2:
			return nil
		}
		rel, ok := idx[name]
		if !ok {
			if builtin[name] {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) not found in %s", name, from, dir)
			}
			return fmt.Errorf("module %s not found in %s and not built in", name, dir)
		}
		state[name] = 1
		ko, err := readModule(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		deps, err := modinfoDepends(ko)
		if err != nil {
			return fmt.Errorf("read modinfo %s: %w", rel, err)
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, Module{Name: name, Path: strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(rel, ".xz"), ".zst"), ".gz"), Deps: deps})
		return nil
	}
	for _, w := range want {
		if err := visit(modName(w), ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// writeModulesDep writes mods in modules.dep's format: each module's path,
// a colon, then the paths of all its dependencies, direct and indirect,
// in the order modprobe unloads them (load them last to first). mods must
// be in dependency order, as resolveModules returns them.
func writeModulesDep(w io.Writer, mods []Module) error {
	byName := map[string]Module{}
	for _, m := range mods {
		byName[m.Name] = m
	}
	bw := bufio.NewWriter(w)
	for _, m := range mods {
		// Walk the closure depth first; reversing a post-order gives an
		// order where every module precedes its dependencies.
		seen := map[string]bool{}
		var post []string
		var walk func(string)
		walk = func(n string) {
			for _, d := range byName[n].Deps {
				if _, ok := byName[d]; ok && !seen[d] {
					seen[d] = true
					walk(d)
					post = append(post, byName[d].Path)
				}
			}
		}
		walk(m.Name)
		for i, j := 0, len(post)-1; i < j; i, j = i+1, j-1 {
			post[i], post[j] = post[j], post[i]
		}
		fmt.Fprintf(bw, "%s:", m.Path)
		for _, p := range post {
			fmt.Fprintf(bw, " %s", p)
		}
		bw.WriteString("\n")
	}
	return bw.Flush()
}

// moduleSigMagic ends a module that carries an appended signature
// (scripts/sign-file.c): data, PKCS#7 signature, a 12-byte
// struct module_signature whose last field is the signature's length
// (big endian), then this magic.
const moduleSigMagic = "~Module signature appended~\n"

// stripModuleSignature returns ko without its appended signature, so the
// guest kernel skips verifying it: under TCG, loading the 21 guest
// modules took 0.44 s stripped against 0.67 s signed (medians of
// BenchmarkBootInitramfs). The host has already
// verified the package the module came from; an unsigned module only
// sets the kernel's "E" taint flag (CONFIG_MODULE_SIG_FORCE is off in
// Debian's kernel; a kernel that forces signatures must not get stripped
// modules).
func stripModuleSignature(ko []byte) []byte {
	if !bytes.HasSuffix(ko, []byte(moduleSigMagic)) {
		return ko
	}
	end := len(ko) - len(moduleSigMagic)
	if end < 12 {
		return ko
	}
	info := ko[end-12 : end]
	sigLen := int(binary.BigEndian.Uint32(info[8:12]))
	if sigLen <= 0 || sigLen > end-12 {
		return ko
	}
	return ko[:end-12-sigLen]
}
