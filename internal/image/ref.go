package image

import (
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Transports an image reference may name, as podman and skopeo spell them.
const (
	TransportDocker            = "docker"
	TransportOCI               = "oci"
	TransportOCIArchive        = "oci-archive"
	TransportDockerArchive     = "docker-archive"
	TransportContainersStorage = "containers-storage"
)

// Source is a parsed image reference: where to read the image from.
type Source struct {
	Transport string
	// Ref is the registry (docker), podman (containers-storage) or optional
	// archive-internal reference; nil when an archive reference names none
	// or names a bare tag.
	Ref name.Reference
	// Path is the archive file or OCI layout directory.
	Path string
	// Tag is the part after PATH: as written, for matching an OCI index's
	// org.opencontainers.image.ref.name annotation or a docker-archive's
	// RepoTags.
	Tag string
}

// String gives the reference back in transport form.
func (s Source) String() string {
	switch s.Transport {
	case TransportDocker:
		return canonicalName(s.Ref)
	case TransportContainersStorage:
		return s.Transport + ":" + canonicalName(s.Ref)
	}
	if s.Tag != "" {
		return s.Transport + ":" + s.Path + ":" + s.Tag
	}
	return s.Transport + ":" + s.Path
}

// ParseReference parses an image reference the way podman does: a bare
// "busybox" is docker.io/library/busybox:latest; "docker://REF" is the same
// as REF; "oci:DIR[:REF]", "oci-archive:PATH[:REF]",
// "docker-archive:PATH[:REF]" read local files; "containers-storage:REF"
// reads the host's podman images. insecure allows plain HTTP to the registry.
// It never touches the network. Errors wrap ErrBadReference.
func ParseReference(s string, insecure bool) (Source, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	transport, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && transport == TransportDocker && strings.HasPrefix(rest, "//"):
		ref, err := parseName(s, strings.TrimPrefix(rest, "//"), opts)
		return Source{Transport: TransportDocker, Ref: ref}, err
	case ok && transport == TransportContainersStorage:
		ref, err := parseName(s, rest, opts)
		return Source{Transport: transport, Ref: ref}, err
	case ok && (transport == TransportOCI || transport == TransportOCIArchive || transport == TransportDockerArchive):
		path, tag, _ := strings.Cut(rest, ":")
		if path == "" {
			return Source{}, newError(ErrBadReference, s, nil, "malformed image reference %q: %s: needs a path, as in %s:/path/to/image[:NAME]", s, transport, transport)
		}
		src := Source{Transport: transport, Path: path, Tag: tag}
		if looksLikeName(tag) {
			ref, err := parseName(s, tag, opts)
			if err != nil {
				return Source{}, err
			}
			src.Ref = ref
		}
		return src, nil
	}
	ref, err := parseName(s, s, opts)
	return Source{Transport: TransportDocker, Ref: ref}, err
}

func parseName(whole, s string, opts []name.Option) (name.Reference, error) {
	if s == "" {
		return nil, newError(ErrBadReference, whole, nil, "malformed image reference %q: empty name: use NAME[:TAG] or NAME@DIGEST, e.g. docker.io/library/busybox:latest", whole)
	}
	ref, err := name.ParseReference(s, opts...)
	if err != nil {
		return nil, newError(ErrBadReference, whole, err, "malformed image reference %q: %v: use NAME[:TAG] or NAME@DIGEST, e.g. docker.io/library/busybox:latest", whole, err)
	}
	return ref, nil
}

// looksLikeName tells an image name ("busybox:1", "localhost/x") from the
// bare tag an OCI layout's ref.name annotation usually holds ("latest").
func looksLikeName(s string) bool {
	return strings.ContainsAny(s, "/:@")
}

// canonicalName spells a reference the way podman shows it: with the
// registry, "docker.io" rather than "index.docker.io", and the tag or digest.
func canonicalName(ref name.Reference) string {
	if ref == nil {
		return ""
	}
	repo := ref.Context()
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	base := reg + "/" + repo.RepositoryStr()
	switch r := ref.(type) {
	case name.Digest:
		return base + "@" + r.DigestStr()
	case name.Tag:
		return base + ":" + r.TagStr()
	}
	return base + ":" + ref.Identifier()
}
