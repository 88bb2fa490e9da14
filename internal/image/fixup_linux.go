package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"
)

// Without root, the extracted tree belongs to the invoking user and has no
// device nodes. mkfs.ext4 -d copies what it finds, so the extractor notes
// what differs and fixup writes it into the finished disk with debugfs,
// which edits the image file directly and needs no privilege.

// debugfsArg quotes a path for debugfs's command parser, or reports that
// it cannot be expressed (a quote or a line break in a name).
func debugfsArg(rel string) (string, bool) {
	if strings.ContainsAny(rel, "\"\n\r\\") {
		return "", false
	}
	if rel == "." {
		return `"/"`, true
	}
	return `"/` + rel + `"`, true
}

func (x *extractor) ownerFixup(hdr *tar.Header) {
	if hdr.Uid == os.Getuid() && hdr.Gid == os.Getgid() {
		return
	}
	p, ok := debugfsArg(hdr.Name)
	if !ok {
		x.skip(hdr, "owner not kept: name debugfs cannot quote")
		return
	}
	x.fixups = append(x.fixups,
		fmt.Sprintf("sif %s uid %d", p, hdr.Uid),
		fmt.Sprintf("sif %s gid %d", p, hdr.Gid))
}

func (x *extractor) deviceFixup(hdr *tar.Header) {
	p, ok := debugfsArg(hdr.Name)
	if !ok {
		x.skip(hdr, "device node not kept: name debugfs cannot quote")
		return
	}
	kind, typ := "c", uint32(0o020000)
	if hdr.Typeflag == tar.TypeBlock {
		kind, typ = "b", 0o060000
	}
	// mknod takes a name in the current directory, not a path.
	dir, _ := debugfsArg(path.Dir(hdr.Name))
	base := `"` + path.Base(hdr.Name) + `"`
	x.fixups = append(x.fixups,
		"cd "+dir,
		fmt.Sprintf("mknod %s %s %d %d", base, kind, hdr.Devmajor, hdr.Devminor),
		"cd /",
		fmt.Sprintf("sif %s mode 0%o", p, typ|uint32(hdr.Mode&0o7777)),
		fmt.Sprintf("sif %s uid %d", p, hdr.Uid),
		fmt.Sprintf("sif %s gid %d", p, hdr.Gid))
	x.entries++
}

func (x *extractor) xattrFixup(hdr *tar.Header, attr, value string) {
	p, ok := debugfsArg(hdr.Name)
	if !ok || strings.ContainsAny(attr, "\" \n") {
		x.skip(hdr, "xattr not kept: name debugfs cannot quote")
		return
	}
	// ea_set -f reads the value from a file: binary values (capabilities)
	// survive that, not the command line.
	f, err := os.CreateTemp("", "fcvm-xattr-")
	if err != nil {
		x.skip(hdr, "xattr not kept: "+err.Error())
		return
	}
	f.WriteString(value)
	f.Close()
	x.fixupFiles = append(x.fixupFiles, f.Name())
	x.fixups = append(x.fixups, fmt.Sprintf("ea_set -f %s %s %s", f.Name(), p, attr))
}

// fixup applies the noted changes to disk.
func (x *extractor) fixup(ctx context.Context, disk string) error {
	defer func() {
		for _, f := range x.fixupFiles {
			os.Remove(f)
		}
	}()
	if len(x.fixups) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", "-", disk)
	cmd.Stdin = strings.NewReader(strings.Join(x.fixups, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs %s: %w: %s", disk, err, lastLine(out.String()))
	}
	// debugfs exits 0 whatever its commands did; an error is a line that
	// starts with the failed command's name.
	for _, l := range strings.Split(out.String(), "\n") {
		for _, c := range []string{"sif: ", "mknod: ", "ea_set: "} {
			if strings.HasPrefix(l, c) {
				return fmt.Errorf("debugfs %s: %s", disk, l)
			}
		}
	}
	x.log.Debug("image disk fixed up without root", "commands", len(x.fixups))
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}
