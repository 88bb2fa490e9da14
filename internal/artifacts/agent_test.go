package artifacts

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckAgentGoBuilds builds fc-agent the natural way with cgo
// available, which links it dynamically, and the way the Makefile does;
// CheckAgent refuses the first, saying how to build it, and takes the
// second.
func TestCheckAgentGoBuilds(t *testing.T) {
	dir := t.TempDir()
	build := func(cgo string) string {
		out := filepath.Join(dir, "fc-agent-cgo"+cgo)
		cmd := exec.Command("go", "build", "-o", out, "github.com/fcvm/fcvm/cmd/fc-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build fc-agent with CGO_ENABLED=%s: %v\n%s", cgo, err, b)
		}
		return out
	}
	dynamic := build("1")
	err := CheckAgent(dynamic)
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "CGO_ENABLED=0 go build") {
		t.Errorf("CheckAgent(fc-agent built with cgo) = %v, want refused, saying how to build it", err)
	}
	if err := CheckAgent(build("0")); err != nil {
		t.Errorf("CheckAgent(fc-agent built with CGO_ENABLED=0) = %v", err)
	}
}

func TestCheckAgent(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	static := testELF{typ: elf.ET_EXEC, machine: elf.EM_X86_64}
	withInterp := static
	withInterp.interp = "/lib64/ld-linux-x86-64.so.2"
	arm := static
	arm.machine = elf.EM_AARCH64
	obj := static
	obj.typ = elf.ET_REL
	pie := static
	pie.typ = elf.ET_DYN
	// A shared library: ET_DYN with DT_NEEDED entries and no loader.
	libm, _ := filepath.Glob("/usr/lib/*-linux-gnu/libm.so.6")
	if len(libm) == 0 {
		t.Fatal("no /usr/lib/*-linux-gnu/libm.so.6 to test with")
	}
	for _, tc := range []struct {
		name, path string
		want       string // in the error; "" for none
	}{
		{"static", write("static", static.bytes("agent")), ""},
		{"static PIE", write("pie", pie.bytes("agent")), ""},
		{"a dynamic executable", "/bin/true", "dynamically linked"},
		{"a program interpreter", write("interp", withInterp.bytes("agent")), `needs the loader "/lib64/ld-linux-x86-64.so.2"`},
		{"shared libraries needed", libm[0], "needs libc.so.6"},
		{"another architecture", write("arm", arm.bytes("agent")), "EM_AARCH64"},
		{"an object file", write("obj", obj.bytes("agent")), "not an executable"},
		{"a script", write("script", []byte("#!/bin/sh\nexec podman\n")), "not an ELF executable"},
		{"missing", filepath.Join(dir, "nothing"), "FCVM_AGENT"},
	} {
		err := CheckAgent(tc.path)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("%s: CheckAgent = %v, want an error saying %q and how to build fc-agent", tc.name, err, tc.want)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", tc.name, err)
		}
	}
}

// testELF is a minimal 64-bit little-endian ELF file: a header, one
// PT_LOAD segment holding some content, and a PT_INTERP if interp is set.
type testELF struct {
	typ     elf.Type
	machine elf.Machine
	interp  string
}

func (e testELF) bytes(content string) []byte {
	const hdrSize, phSize = 64, 56
	progs := []elf.Prog64{{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Align: 4096}}
	if e.interp != "" {
		progs = append(progs, elf.Prog64{Type: uint32(elf.PT_INTERP), Flags: uint32(elf.PF_R), Align: 1})
	}
	off := uint64(hdrSize + phSize*len(progs))
	progs[0].Off, progs[0].Vaddr, progs[0].Paddr = off, 0x400000+off, 0x400000+off
	progs[0].Filesz, progs[0].Memsz = uint64(len(content)), uint64(len(content))
	data := content
	if e.interp != "" {
		p := &progs[1]
		p.Off = off + uint64(len(content))
		p.Vaddr, p.Paddr = 0x400000+p.Off, 0x400000+p.Off
		p.Filesz, p.Memsz = uint64(len(e.interp)+1), uint64(len(e.interp)+1)
		data += e.interp + "\x00"
	}
	h := elf.Header64{
		Type: uint16(e.typ), Machine: uint16(e.machine), Version: uint32(elf.EV_CURRENT),
		Entry: progs[0].Vaddr, Phoff: hdrSize, Ehsize: hdrSize,
		Phentsize: phSize, Phnum: uint16(len(progs)),
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, h)
	binary.Write(&b, binary.LittleEndian, progs)
	b.WriteString(data)
	return b.Bytes()
}
