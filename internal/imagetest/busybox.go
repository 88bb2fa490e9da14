package imagetest

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxBinary is Debian's statically linked busybox.
const BusyboxBinary = "/bin/busybox"

// Options shape a test image. The zero value is busybox with Cmd ["sh"].
type Options struct {
	Entrypoint []string
	Cmd        []string
	Env        []string // default PATH=/usr/sbin:/usr/bin:/sbin:/bin
	WorkingDir string
	User       string
	StopSignal string
	Labels     map[string]string
	Ports      []string // exposed, "8080/tcp"
	// ExtraFiles are added to the image: path (absolute or not) to
	// content, mode 0644, owned by root; parent directories are made.
	ExtraFiles map[string]string
	// ExtraLayers are added above the busybox layer, each a tar built
	// with Layer.
	ExtraLayers []v1.Layer
}

// epoch is the time of every file and of the image, for reproducibility.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Busybox builds a one-container image from the host's busybox-static.
func Busybox(t testing.TB, o Options) v1.Image {
	t.Helper()
	bb, err := os.ReadFile(BusyboxBinary)
	if err != nil {
		t.Fatalf("imagetest: read %s: %v: %s", BusyboxBinary, err, Install)
	}
	out, err := exec.Command(BusyboxBinary, "--list-full").Output()
	if err != nil {
		t.Fatalf("imagetest: %s --list-full: %v: %s", BusyboxBinary, err, Install)
	}

	var entries []Entry
	dirs := map[string]bool{}
	addDir := func(p string, mode int64, uid int) {
		if !dirs[p] {
			dirs[p] = true
			entries = append(entries, Entry{Name: p, Type: tar.TypeDir, Mode: mode, Uid: uid, Gid: uid})
		}
	}
	addParents := func(p string) {
		var parents []string
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			addDir(parents[i], 0o755, 0)
		}
	}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home"} {
		addDir(d, 0o755, 0)
	}
	addDir("tmp", 0o1777, 0)
	addDir("home/app", 0o755, 1000)
	entries = append(entries,
		Entry{Name: "bin/busybox", Mode: 0o755, Body: string(bb)},
		Entry{Name: "etc/passwd", Mode: 0o644, Body: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		Entry{Name: "etc/group", Mode: 0o644, Body: "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"},
	)
	var applets []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l == "bin/busybox" || strings.Contains(l, "..") {
			continue
		}
		applets = append(applets, l)
	}
	sort.Strings(applets)
	for _, a := range applets {
		addParents(a)
		entries = append(entries, Entry{Name: a, Type: tar.TypeSymlink, Linkname: "/bin/busybox"})
	}
	var extra []string
	for p := range o.ExtraFiles {
		extra = append(extra, p)
	}
	sort.Strings(extra)
	for _, p := range extra {
		rel := strings.TrimPrefix(path.Clean("/"+p), "/")
		addParents(rel)
		entries = append(entries, Entry{Name: rel, Mode: 0o644, Body: o.ExtraFiles[p]})
	}

	img, err := mutate.AppendLayers(empty.Image, Layer(t, entries...))
	if err != nil {
		t.Fatalf("imagetest: build image: %v", err)
	}
	if len(o.ExtraLayers) > 0 {
		if img, err = mutate.AppendLayers(img, o.ExtraLayers...); err != nil {
			t.Fatalf("imagetest: build image: %v", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("imagetest: build image: %v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = o.Entrypoint
	cf.Config.Cmd = o.Cmd
	if o.Entrypoint == nil && o.Cmd == nil {
		cf.Config.Cmd = []string{"sh"}
	}
	cf.Config.Env = o.Env
	if cf.Config.Env == nil {
		cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	cf.Config.WorkingDir = o.WorkingDir
	cf.Config.User = o.User
	cf.Config.StopSignal = o.StopSignal
	cf.Config.Labels = o.Labels
	if len(o.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range o.Ports {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("imagetest: build image: %v", err)
	}
	return img
}

// Entry is one file in a layer built by Layer. Type defaults to a regular
// file; Mode to 0644 for files and 0755 for directories.
type Entry struct {
	Name     string
	Type     byte
	Mode     int64
	Uid, Gid int
	Body     string // file content
	Linkname string // symlink or hardlink target
	Devmajor int64
	Devminor int64
	Xattrs   map[string]string
}

// Layer builds an uncompressed-content layer (stored gzipped) holding
// entries in the order given. Whiteouts are entries named ".wh.NAME" and
// ".wh..wh..opq", as in any OCI layer.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.Uid, Gid: e.Gid,
			Linkname: e.Linkname, Devmajor: e.Devmajor, Devminor: e.Devminor,
			ModTime: epoch, Format: tar.FormatPAX,
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		for k, v := range e.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("imagetest: layer entry %s: %v", e.Name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				t.Fatalf("imagetest: layer entry %s: %v", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("imagetest: layer: %v", err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		t.Fatalf("imagetest: layer: %v", err)
	}
	return l
}

// WriteOCILayout writes img to an OCI layout directory. A non-empty refName
// becomes the org.opencontainers.image.ref.name annotation ("latest", or a
// full name), which oci:DIR:REF selects by.
func WriteOCILayout(t testing.TB, img v1.Image, dir, refName string) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatalf("imagetest: write OCI layout %s: %v", dir, err)
	}
	var opts []layout.Option
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		t.Fatalf("imagetest: write OCI layout %s: %v", dir, err)
	}
}

// WriteOCIArchive writes img as an OCI archive (a tar of an OCI layout)
// at path, without a ref.name annotation.
func WriteOCIArchive(t testing.TB, img v1.Image, path string) {
	t.Helper()
	WriteOCIArchiveNamed(t, img, path, "")
}

// WriteOCIArchiveNamed is WriteOCIArchive with a ref.name annotation.
func WriteOCIArchiveNamed(t testing.TB, img v1.Image, path, refName string) {
	t.Helper()
	dir := t.TempDir()
	WriteOCILayout(t, img, dir, refName)
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("imagetest: write OCI archive: %v", err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatalf("imagetest: write OCI archive %s: %v", path, err)
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("imagetest: write OCI archive %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("imagetest: write OCI archive %s: %v", path, err)
	}
}

// WriteDockerArchive writes img as a `docker save` archive at path, tagged
// with tag (e.g. "localhost/test/busybox:1").
func WriteDockerArchive(t testing.TB, img v1.Image, path, tag string) {
	t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatalf("imagetest: tag %q: %v", tag, err)
	}
	if err := tarball.WriteToFile(path, ref, img); err != nil {
		t.Fatalf("imagetest: write docker archive %s: %v", path, err)
	}
}

// Push uploads img to ref, a name on a local registry such as
// "127.0.0.1:PORT/test/busybox:1", over plain HTTP.
func Push(t testing.TB, img v1.Image, ref string) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("imagetest: push %s: %v", ref, err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("imagetest: push %s: %v", ref, err)
	}
}

// ID is img's config digest, which is what fcvm calls an image ID.
func ID(t testing.TB, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatalf("imagetest: image ID: %v", err)
	}
	return h.String()
}
