// Package busybox writes a minimal container image (Debian's static
// busybox with its applets) as an OCI archive, for benchmarks and the
// demo on machines that cannot reach a public registry.
package busybox

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Binary is Debian's statically linked busybox (package busybox-static).
const Binary = "/bin/busybox"

// Image builds the image.
func Image() (v1.Image, error) { return build(false) }

// WithBash is the image with a /bin/bash that hands its command to
// busybox sh, for the sandbox API driven by the E2B SDK (which runs every
// command as /bin/bash -l -c CMD; busybox has no bash).
func WithBash() (v1.Image, error) { return build(true) }

// bashShim is WithBash's /bin/bash.
const bashShim = `#!/bin/sh
[ "$1" = -l ] && shift
exec /bin/sh "$@"
`

func build(bash bool) (v1.Image, error) {
	bb, err := os.ReadFile(Binary)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w (apt-get install busybox-static)", Binary, err)
	}
	list, err := exec.Command(Binary, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	dir := func(d string) {
		for d != "." && d != "/" && !dirs[d] {
			dirs[d] = true
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755})
			d = path.Dir(d)
		}
	}
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "run", "root", "var/www"} {
		dir(d)
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	for _, l := range strings.Fields(string(list)) {
		if l == "bin/busybox" {
			continue
		}
		dir(path.Dir(l))
		rel := strings.Repeat("../", strings.Count(l, "/")) + "bin/busybox"
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: l, Linkname: rel, Mode: 0o777})
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n"
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd))})
	io.WriteString(tw, passwd)
	group := "root:x:0:\napp:x:1000:\n"
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644, Size: int64(len(group))})
	io.WriteString(tw, group)
	index := "<h1>hello from fcvm</h1>\n"
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "var/www/index.html", Mode: 0o644, Size: int64(len(index))})
	io.WriteString(tw, index)
	if bash {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/bash", Mode: 0o755, Size: int64(len(bashShim))})
		io.WriteString(tw, bashShim)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config.Cmd = []string{"sh"}
	cfg.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	return mutate.ConfigFile(img, cfg)
}

// WriteOCIArchive writes the image to path as an OCI archive (a tar of an
// OCI layout), for `fcvm run oci-archive:PATH`.
func WriteOCIArchive(path string) error {
	img, err := Image()
	if err != nil {
		return err
	}
	return WriteImage(img, path)
}

// WriteImage writes img to path as an OCI archive.
func WriteImage(img v1.Image, path string) error {
	tmp, err := os.MkdirTemp("", "busybox-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	lp, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendImage(img); err != nil {
		return err
	}
	out, err := exec.Command("tar", "-C", tmp, "-cf", path, ".").CombinedOutput()
	if err != nil {
		return fmt.Errorf("tar OCI layout: %w: %s", err, out)
	}
	return nil
}
