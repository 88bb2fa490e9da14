package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// fetched is an image read from its source and not yet cached: its layers
// are read lazily while the disk is built.
type fetched struct {
	img    v1.Image
	names  []string // canonical names to give it
	digest string   // the manifest (or index) digest the source gave
	done   func()   // removes temporary files; never nil
	// layers, if set, must run before the layers are read: sources that
	// can tell the image ID without them fetch them only when building.
	layers func() error
}

// fetch opens the image src names.
func (s *Store) fetch(ctx context.Context, src Source, opts PullOptions, plat v1.Platform) (*fetched, error) {
	switch src.Transport {
	case TransportDocker:
		return s.fetchRemote(ctx, src, opts, plat)
	case TransportOCI:
		return s.fetchLayout(src, src.Path, plat, func() {})
	case TransportOCIArchive:
		return s.fetchOCIArchive(src, src.Path, plat)
	case TransportDockerArchive:
		return s.fetchDockerArchive(src)
	case TransportContainersStorage:
		return s.fetchPodman(ctx, src, plat)
	}
	return nil, newError(ErrBadReference, src.String(), nil, "malformed image reference %q: unknown transport", src.String())
}

func registryHost(ref name.Reference) string {
	h := ref.Context().RegistryStr()
	if h == name.DefaultRegistry {
		return "docker.io"
	}
	return h
}

func (s *Store) remoteOptions(ctx context.Context, opts PullOptions, plat v1.Platform) []remote.Option {
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	if !opts.TLSVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user asked for --tls-verify=false
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(s.keychain),
		remote.WithTransport(tr),
		remote.WithPlatform(plat),
		remote.WithUserAgent("fcvm"),
	}
}

func (s *Store) fetchRemote(ctx context.Context, src Source, opts PullOptions, plat v1.Platform) (*fetched, error) {
	ref := src.Ref
	display := canonicalName(ref)
	desc, err := remote.Get(ref, s.remoteOptions(ctx, opts, plat)...)
	if err != nil {
		return nil, registryError(display, registryHost(ref), opts.TLSVerify, err)
	}
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, registryError(display, registryHost(ref), opts.TLSVerify, err)
		}
		img, err = pickPlatform(idx, display, plat)
		if err != nil {
			return nil, err
		}
	} else if img, err = desc.Image(); err != nil {
		return nil, registryError(display, registryHost(ref), opts.TLSVerify, err)
	}
	return &fetched{img: img, names: []string{display}, digest: desc.Digest.String(), done: func() {}}, nil
}

// pickPlatform returns the image for plat from a multi-platform index.
func pickPlatform(idx v1.ImageIndex, display string, plat v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("read index of %s: %w", display, err)
	}
	var have []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			continue
		}
		if platformMatches(*d.Platform, plat) {
			if d.MediaType.IsIndex() {
				child, err := idx.ImageIndex(d.Digest)
				if err != nil {
					return nil, fmt.Errorf("read index of %s: %w", display, err)
				}
				return pickPlatform(child, display, plat)
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", display, err)
			}
			return img, nil
		}
		have = append(have, d.Platform.String())
	}
	// An index without platforms (as some OCI layouts are) with one image.
	if len(im.Manifests) == 1 && im.Manifests[0].Platform == nil && im.Manifests[0].MediaType.IsImage() {
		return idx.Image(im.Manifests[0].Digest)
	}
	return nil, newError(ErrNotFound, display, nil, "image %s has no %s variant (it has: %s): pick another image", display, plat.String(), strings.Join(have, ", "))
}

func platformMatches(have, want v1.Platform) bool {
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	return want.Variant == "" || have.Variant == "" || have.Variant == want.Variant
}

// Annotations that name an image inside an OCI layout.
const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

func (s *Store) fetchLayout(src Source, dir string, plat v1.Platform, done func()) (*fetched, error) {
	display := src.String()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		done()
		if errors.Is(err, fs.ErrNotExist) {
			return nil, newError(ErrNotFound, display, err, "image %s not found: %s is not an OCI layout (no index.json): check the path", display, src.Path)
		}
		return nil, fmt.Errorf("read %s: %w", display, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		done()
		return nil, fmt.Errorf("read %s: %w", display, err)
	}
	var cands []v1.Descriptor
	var held []string
	for _, d := range im.Manifests {
		n := layoutName(d)
		if n != "" {
			held = append(held, n)
		}
		if src.Tag == "" || refNameMatches(d, src) {
			cands = append(cands, d)
		}
	}
	switch {
	case len(cands) == 0 && src.Tag != "":
		done()
		return nil, newError(ErrNotFound, display, nil, "image %s not found in %s (it holds: %s): check the name", src.Tag, src.Path, strings.Join(held, ", "))
	case len(cands) == 0:
		done()
		return nil, newError(ErrNotFound, display, nil, "image %s: %s holds no image", display, src.Path)
	case len(cands) > 1:
		done()
		return nil, newError(ErrBadReference, display, nil, "image %s: %s holds %d images (%s): name one, as in %s:%s:NAME", display, src.Path, len(cands), strings.Join(held, ", "), src.Transport, src.Path)
	}
	d := cands[0]
	var img v1.Image
	if d.MediaType.IsIndex() {
		child, err := idx.ImageIndex(d.Digest)
		if err == nil {
			img, err = pickPlatform(child, display, plat)
		}
		if err != nil {
			done()
			return nil, err
		}
	} else if img, err = idx.Image(d.Digest); err != nil {
		done()
		return nil, fmt.Errorf("read %s: %w", display, err)
	}
	f := &fetched{img: img, digest: d.Digest.String(), done: done}
	if src.Ref != nil {
		f.names = []string{canonicalName(src.Ref)}
	} else if n := layoutName(d); looksLikeName(n) {
		if ref, err := name.ParseReference(n); err == nil {
			f.names = []string{canonicalName(ref)}
		}
	}
	return f, nil
}

// layoutName is the fullest name an OCI index entry carries.
func layoutName(d v1.Descriptor) string {
	if n := d.Annotations[annotationContainerdName]; n != "" {
		return n
	}
	return d.Annotations[annotationRefName]
}

func refNameMatches(d v1.Descriptor, src Source) bool {
	for _, key := range []string{annotationRefName, annotationContainerdName} {
		n := d.Annotations[key]
		if n == "" {
			continue
		}
		if n == src.Tag {
			return true
		}
		if src.Ref != nil && looksLikeName(n) {
			if ref, err := name.ParseReference(n); err == nil && canonicalName(ref) == canonicalName(src.Ref) {
				return true
			}
		}
	}
	return false
}

func (s *Store) fetchOCIArchive(src Source, archive string, plat v1.Platform) (*fetched, error) {
	display := src.String()
	f, err := os.Open(archive)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, newError(ErrNotFound, display, err, "image %s not found: no file %s: check the path", display, archive)
		}
		return nil, fmt.Errorf("open %s: %w", display, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	dir, release, err := s.tempDir("src")
	if err != nil {
		return nil, err
	}
	// Manifests and configs first: if the image is cached, its layers,
	// most of the archive, are never copied.
	if err := untarLayout(f, dir, smallBlob); err != nil {
		release()
		return nil, fmt.Errorf("read %s: %w", display, err)
	}
	fe, err := s.fetchLayout(src, dir, plat, release)
	if err != nil {
		return nil, err
	}
	ok = true
	fe.layers = func() error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		return untarLayout(f, dir, -1)
	}
	inner := fe.done
	fe.done = func() { f.Close(); inner() }
	return fe, nil
}

// smallBlob is the largest blob read before the image ID is known:
// manifests and configs are far smaller.
const smallBlob = 1 << 20

// untarLayout unpacks an OCI archive: plain files and directories only,
// each kept inside dir, and of the blobs only those up to max bytes unless
// max is negative.
func untarLayout(r io.Reader, dir string, max int64) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rel := path.Clean("/" + hdr.Name)[1:]
		if rel == "" {
			continue
		}
		p := filepath.Join(dir, rel)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if max >= 0 && hdr.Size > max && strings.HasPrefix(rel, "blobs/") {
				continue
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

func (s *Store) fetchDockerArchive(src Source) (*fetched, error) {
	display := src.String()
	if _, err := os.Stat(src.Path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, newError(ErrNotFound, display, err, "image %s not found: no file %s: check the path", display, src.Path)
		}
		return nil, fmt.Errorf("open %s: %w", display, err)
	}
	opener := func() (io.ReadCloser, error) { return os.Open(src.Path) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", display, err)
	}
	var tag *name.Tag
	if src.Tag != "" {
		t, err := name.NewTag(src.Tag)
		if err != nil {
			return nil, newError(ErrBadReference, display, err, "malformed image reference %q: %v: use docker-archive:PATH[:NAME:TAG]", display, err)
		}
		tag = &t
	}
	var held []string
	for _, d := range m {
		held = append(held, d.RepoTags...)
	}
	if tag == nil && len(m) != 1 {
		return nil, newError(ErrBadReference, display, nil, "image %s: %s holds %d images (%s): name one, as in docker-archive:%s:NAME:TAG", display, src.Path, len(m), strings.Join(held, ", "), src.Path)
	}
	img, err := tarball.Image(opener, tag)
	if err != nil {
		if tag != nil {
			return nil, newError(ErrNotFound, display, err, "image %s not found in %s (it holds: %s): check the name", src.Tag, src.Path, strings.Join(held, ", "))
		}
		return nil, fmt.Errorf("read %s: %w", display, err)
	}
	f := &fetched{img: img, done: func() {}}
	if dg, err := img.Digest(); err == nil {
		f.digest = dg.String()
	}
	if tag != nil {
		f.names = []string{canonicalName(*tag)}
	} else {
		for _, t := range m[0].RepoTags {
			if ref, err := name.ParseReference(t); err == nil {
				f.names = append(f.names, canonicalName(ref))
			}
		}
	}
	return f, nil
}

// fetchPodman exports the image from the host's podman storage (podman
// needs no runtime for that) and reads the export. The export keeps the
// image's own format, docker or OCI: converting rewrites the config, and
// with it the ID podman shows.
func (s *Store) fetchPodman(ctx context.Context, src Source, plat v1.Platform) (*fetched, error) {
	display := src.String()
	bin, err := exec.LookPath("podman")
	if err != nil {
		return nil, newError(ErrNotFound, display, err, "image %s: containers-storage needs podman on the host: apt-get install podman", display)
	}
	ref := canonicalName(src.Ref)
	podman := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(msg, "image not known") || strings.Contains(msg, "no such image") || strings.Contains(msg, "failed to find image") {
				return nil, newError(ErrNotFound, display, err, "image %s not found in podman's storage: check `podman images`", ref)
			}
			if i := strings.LastIndex(msg, "\n"); i >= 0 {
				msg = msg[i+1:]
			}
			return nil, fmt.Errorf("podman %s %s: %v: %s", args[0], ref, err, msg)
		}
		return out, nil
	}
	mt, err := podman("image", "inspect", "--format", "{{.ManifestType}}", ref)
	if err != nil {
		return nil, err
	}
	format := "docker-archive"
	if strings.Contains(string(mt), "oci") {
		format = "oci-archive"
	}
	dir, release, err := s.tempDir("src")
	if err != nil {
		return nil, err
	}
	archive := filepath.Join(dir, "image.tar")
	if _, err := podman("image", "save", "--format", format, "--output", archive, ref); err != nil {
		release()
		return nil, err
	}
	var fe *fetched
	if format == "oci-archive" {
		fe, err = s.fetchOCIArchive(Source{Transport: TransportOCIArchive, Path: archive}, archive, plat)
	} else {
		fe, err = s.fetchDockerArchive(Source{Transport: TransportDockerArchive, Path: archive})
	}
	if err != nil {
		release()
		return nil, err
	}
	inner := fe.done
	fe.done = func() { inner(); release() }
	fe.names = []string{ref}
	return fe, nil
}
