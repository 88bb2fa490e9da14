package artifacts

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultAgentPath is where Build finds fc-agent when BuildOptions leaves
// AgentPath empty: $FCVM_AGENT, else a file named fc-agent beside the
// running executable.
func DefaultAgentPath() string {
	if p := os.Getenv("FCVM_AGENT"); p != "" {
		return p
	}
	exe, err := os.Executable()
	if err != nil {
		return "fc-agent"
	}
	return filepath.Join(filepath.Dir(exe), "fc-agent")
}

// buildAgent says how to make an fc-agent Build accepts. With cgo
// available (gcc installed), a plain `go build` links fc-agent
// dynamically, because package net then uses the C resolver.
const buildAgent = "build it static with `CGO_ENABLED=0 go build -o bin/ ./cmd/fcvm ./cmd/fc-agent` (what `make build` does) and keep it beside fcvm, or set FCVM_AGENT"

// CheckAgent reports whether the file at path can be the guest's /init:
// an ELF executable for this architecture that is statically linked. The
// initramfs holds no dynamic loader or libc, so a dynamically linked
// agent (a program interpreter, or shared libraries it needs) would only
// get as far as a kernel panic, "No working init found". Build runs it
// before anything else.
func CheckAgent(path string) error {
	f, err := elf.Open(path)
	var fe *elf.FormatError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read fc-agent: %w: %s", err, buildAgent)
	case errors.As(err, &fe):
		return fmt.Errorf("fc-agent %s is not an ELF executable (%v): %s", path, err, buildAgent)
	case err != nil:
		return fmt.Errorf("read fc-agent: %w", err)
	}
	defer f.Close()
	// Build makes amd64 guests only (see debianArch).
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("fc-agent %s is for %v %v, the guest is x86-64: %s", path, f.Class, f.Machine, buildAgent)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("fc-agent %s is an ELF %v, not an executable: %s", path, f.Type, buildAgent)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			loader, _ := io.ReadAll(io.LimitReader(p.Open(), 256))
			return fmt.Errorf("fc-agent %s is dynamically linked (it needs the loader %q), and the initramfs it runs from has none: %s", path, bytes.TrimRight(loader, "\x00"), buildAgent)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("fc-agent %s: read its dynamic section: %w", path, err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("fc-agent %s is dynamically linked (it needs %s), and the initramfs it runs from has no libraries: %s", path, strings.Join(libs, ", "), buildAgent)
	}
	return nil
}
