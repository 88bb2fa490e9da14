// Package guestmod loads the guest's kernel modules from the initramfs.
// fc-agent, as PID 1, calls LoadAll first thing, before it mounts any
// disk: Debian's kernel has virtio, ext4, overlay, fuse and vsock as
// modules, and there is no modprobe or udev in the guest.
//
// LoadAll reads /lib/modules/<release>/modules.dep, which fcvm setup
// writes naming exactly the modules the guest needs, and loads every
// module in it, dependencies first, with finit_module(2). It imports only
// the standard library and x/sys: the agent is static and small.
//
// # What counts as success
//
// No /lib/modules/<release> directory means a kernel with everything
// built in (a user's --kernel): nothing to do. A module that is already
// loaded (EEXIST) is fine. A module whose device is absent (ENODEV, as
// some drivers return when their hardware is missing) is logged and
// skipped. Any other failure is returned, after every other module that
// does not depend on the failed one has been tried.
//
// # Parameters
//
// Like modprobe, LoadAll passes each module the "<module>.<param>=<value>"
// options on /proc/cmdline. This matters for virtio_mmio: Firecracker
// announces its devices as virtio_mmio.device=<size>@<addr>:<irq>, which
// the kernel only applies by itself when virtio_mmio is built in.
//
// # Speed
//
// This is on every boot's critical path. Modules are loaded in dependency
// waves: every module whose dependencies are loaded goes at once, each in
// its own goroutine, so module init functions (virtio probing, crypto
// self-tests) overlap.
package guestmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Module is one line of modules.dep.
type Module struct {
	Name string   // normalised: '-' becomes '_'
	Path string   // relative to the modules directory
	Deps []string // names of modules that must be loaded first
}

// Name returns a module's name from its file name, as the kernel spells
// it: "kernel/fs/fuse/fuse.ko" and "crc32c-intel.ko.xz" give "fuse" and
// "crc32c_intel".
func Name(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// ParseModulesDep reads modules.dep ("path: dep-path dep-path ...").
func ParseModulesDep(r io.Reader) ([]Module, error) {
	var mods []Module
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, deps, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep: no colon in %q", line)
		}
		m := Module{Name: Name(p), Path: strings.TrimSpace(p)}
		for _, d := range strings.Fields(deps) {
			m.Deps = append(m.Deps, Name(d))
		}
		mods = append(mods, m)
	}
	return mods, sc.Err()
}

// Waves orders mods for loading: every module of a wave depends only on
// modules of earlier waves. Dependencies that mods does not list are
// taken to be built in. A cycle is an error.
func Waves(mods []Module) ([][]Module, error) {
	listed := map[string]bool{}
	for _, m := range mods {
		listed[m.Name] = true
	}
	done := map[string]bool{}
	left := mods
	var waves [][]Module
	for len(left) > 0 {
		var wave, rest []Module
		for _, m := range left {
			ready := true
			for _, d := range m.Deps {
				if listed[d] && !done[d] {
					ready = false
					break
				}
			}
			if ready {
				wave = append(wave, m)
			} else {
				rest = append(rest, m)
			}
		}
		if len(wave) == 0 {
			return nil, fmt.Errorf("modules.dep: dependency cycle among %d modules, e.g. %s", len(rest), rest[0].Name)
		}
		for _, m := range wave {
			done[m.Name] = true
		}
		waves = append(waves, wave)
		left = rest
	}
	return waves, nil
}

// CmdlineParams collects "<module>.<param>=<value>" options from a kernel
// command line, by normalised module name, each module's options joined
// with spaces as finit_module wants them. Quoted values keep their
// spaces.
func CmdlineParams(cmdline string) map[string]string {
	params := map[string]string{}
	for _, tok := range splitCmdline(cmdline) {
		if tok == "--" {
			break // what follows is init's arguments
		}
		key, _, _ := strings.Cut(tok, "=")
		mod, param, ok := strings.Cut(key, ".")
		if !ok || mod == "" || param == "" {
			continue
		}
		mod = strings.ReplaceAll(mod, "-", "_")
		opt := strings.TrimPrefix(tok, key[:len(mod)+1])
		if p := params[mod]; p != "" {
			params[mod] = p + " " + opt
		} else {
			params[mod] = opt
		}
	}
	return params
}

// splitCmdline splits on spaces outside double quotes, keeping the quotes
// (the kernel's own parser accepts them in module parameters).
func splitCmdline(s string) []string {
	var toks []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case (r == ' ' || r == '\n' || r == '\t') && !quoted:
			if cur.Len() > 0 {
				toks = append(toks, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		toks = append(toks, cur.String())
	}
	return toks
}

// LoadError lists the modules that failed to load.
type LoadError struct {
	Failed map[string]error // by module name
}

func (e *LoadError) Error() string {
	var b strings.Builder
	b.WriteString("load kernel modules:")
	for name, err := range e.Failed {
		fmt.Fprintf(&b, " %s: %v;", name, err)
	}
	return strings.TrimSuffix(b.String(), ";")
}

// ErrSkipped marks a module not tried because a dependency failed.
var ErrSkipped = errors.New("guestmod: a dependency failed to load")

// LoadAll loads the modules of the running kernel's
// /lib/modules/<release>/modules.dep. See the package documentation.
func LoadAll(log *slog.Logger) error {
	release, err := kernelRelease()
	if err != nil {
		return fmt.Errorf("load kernel modules: %w", err)
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	return Load(log, filepath.Join("/lib/modules", release), string(cmdline), finitModule)
}

// LoadFunc loads one module file with its parameters. It returns nil when
// the module is loaded or was already.
type LoadFunc func(path, params string) error

// Load loads the modules of dir/modules.dep with load, passing the
// parameters found on cmdline. A missing dir or modules.dep is not an
// error: the kernel has what it needs built in.
func Load(log *slog.Logger, dir, cmdline string, load LoadFunc) error {
	start := time.Now()
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if errors.Is(err, os.ErrNotExist) {
		log.Debug("no modules.dep: kernel has its drivers built in", "dir", dir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("load kernel modules: %w", err)
	}
	mods, err := ParseModulesDep(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("load kernel modules: %w", err)
	}
	waves, err := Waves(mods)
	if err != nil {
		return fmt.Errorf("load kernel modules: %w", err)
	}
	params := CmdlineParams(cmdline)

	failed := map[string]error{}
	var mu sync.Mutex // guards failed while a wave runs
	for _, wave := range waves {
		var wg sync.WaitGroup
		for _, m := range wave {
			// Dependencies are all in earlier waves, finished: reading
			// their entries needs no lock, but this wave's goroutines
			// are writing others.
			mu.Lock()
			dep := firstFailed(m, failed)
			if dep != "" {
				failed[m.Name] = fmt.Errorf("%w (%s)", ErrSkipped, dep)
			}
			mu.Unlock()
			if dep != "" {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.Now()
				err := load(filepath.Join(dir, m.Path), params[m.Name])
				log.Debug("load module", "module", m.Name, "took", time.Since(t), "err", err)
				if errors.Is(err, errNoDevice) {
					log.Debug("module has no device", "module", m.Name)
					err = nil
				}
				if err != nil {
					mu.Lock()
					failed[m.Name] = err
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	log.Debug("loaded kernel modules", "count", len(mods), "waves", len(waves), "failed", len(failed), "took", time.Since(start))
	if len(failed) > 0 {
		return &LoadError{Failed: failed}
	}
	return nil
}

func firstFailed(m Module, failed map[string]error) string {
	for _, d := range m.Deps {
		if failed[d] != nil {
			return d
		}
	}
	return ""
}
