package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/fcvm/fcvm/internal/atomicfile"
)

// Image is one cached image.
type Image struct {
	// ID is the image's config digest ("sha256:..."), as podman shows it:
	// the same image read from a registry or an archive has the same ID.
	ID string `json:"id"`
	// Digest is the manifest (or index) digest of the source it was first
	// pulled from; empty when the source had none.
	Digest string `json:"digest,omitempty"`
	// Refs are the canonical names pointing at the image, sorted.
	Refs []string `json:"refs"`
	// Disk is the read-only ext4 image of the flattened root filesystem.
	Disk    string    `json:"disk"`
	Config  Config    `json:"config"`
	Size    int64     `json:"size"`    // bytes of Disk
	Created time.Time `json:"created"` // when the image was built, from its config
}

// Config is what the guest needs from the image config to run the
// container; the host passes it to podman as flags.
type Config struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	User         string            `json:"user,omitempty"`
	StopSignal   string            `json:"stopSignal,omitempty"`
	ExposedPorts []string          `json:"exposedPorts,omitempty"` // "80/tcp", sorted
	Labels       map[string]string `json:"labels,omitempty"`
}

// PullOptions says how to pull.
type PullOptions struct {
	// TLSVerify checks registry certificates and uses HTTPS. False allows
	// plain HTTP and any certificate (podman's --tls-verify=false).
	// Registries on loopback addresses are spoken to over plain HTTP
	// either way.
	TLSVerify bool
	// Progress receives human progress lines; nil is quiet. Pass the
	// terminal, not a pipe.
	Progress io.Writer
	// Platform is "os/arch[/variant]"; empty means linux and this host's
	// architecture.
	Platform string
}

// DefaultPullOptions verifies TLS and is quiet.
func DefaultPullOptions() PullOptions { return PullOptions{TLSVerify: true} }

// Store is a directory of cached images. Its methods may be called
// concurrently, from one process or many.
type Store struct {
	dir      string
	log      *slog.Logger
	keychain authn.Keychain

	// InUse reports whether a VM uses the image with this ID: Remove
	// refuses such images and Prune keeps them. Nil means none is in use.
	// Set it before the Store is shared.
	InUse func(id string) bool
	// Limits bound what one image may expand to while it is extracted;
	// zero fields take the defaults. Set them before the Store is shared.
	Limits Limits
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "locks")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	return &Store{dir: dir, log: log, keychain: Keychain()}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// record is image.json in an image's directory.
type record struct {
	ID      string    `json:"id"`
	Digest  string    `json:"digest,omitempty"`
	Config  Config    `json:"config"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	Pulled  time.Time `json:"pulled"`
}

const (
	recordFile = "image.json"
	diskFile   = "disk.ext4"
)

func hexOf(id string) string { return strings.TrimPrefix(id, "sha256:") }

func (s *Store) imageDir(id string) string { return filepath.Join(s.dir, hexOf(id)) }

func (s *Store) load(id string, refs []string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(s.imageDir(id), recordFile))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read image %s: %w", id, err)
	}
	return &Image{
		ID: r.ID, Digest: r.Digest, Refs: refs, Disk: filepath.Join(s.imageDir(id), diskFile),
		Config: r.Config, Size: r.Size, Created: r.Created,
	}, nil
}

func refsTo(idx *refIndex, id string) []string {
	var refs []string
	for ref, to := range idx.Refs {
		if to == id {
			refs = append(refs, ref)
		}
	}
	sort.Strings(refs)
	return refs
}

// Pull reads the image ref names from its source and caches it, unless an
// image with the same ID is cached already; either way ref then names it.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	src, err := ParseReference(ref, !opts.TLSVerify)
	if err != nil {
		return nil, err
	}
	return s.pull(ctx, src, opts)
}

func (s *Store) pull(ctx context.Context, src Source, opts PullOptions) (*Image, error) {
	plat, err := parsePlatform(opts.Platform)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	progress(opts.Progress, "Pulling %s\n", src)
	f, err := s.fetch(ctx, src, opts, plat)
	if err != nil {
		return nil, err
	}
	defer f.done()
	cfgName, err := f.img.ConfigName()
	if err != nil {
		return nil, s.sourceError(src, opts, err)
	}
	cfg, err := f.img.ConfigFile()
	if err != nil {
		return nil, s.sourceError(src, opts, err)
	}
	if (cfg.OS != "" && cfg.OS != plat.OS) || (cfg.Architecture != "" && cfg.Architecture != plat.Architecture) {
		return nil, newError(ErrNotFound, src.String(), nil, "image %s is for %s/%s, not %s: pick another image", src, cfg.OS, cfg.Architecture, plat)
	}
	id := cfgName.String()
	for {
		if err := s.build(ctx, f, id, cfg, opts.Progress); err != nil {
			return nil, s.sourceError(src, opts, err)
		}
		img, ok, err := s.tag(ctx, id, f.names)
		if err != nil {
			return nil, err
		}
		if ok {
			s.log.Info("image pulled", "ref", src.String(), "id", id, "elapsed", time.Since(start))
			progress(opts.Progress, "Image %s\n", id)
			return img, nil
		}
		// Removed between building and tagging: build again.
	}
}

// sourceError maps a failure reading layers to a user-facing error.
func (s *Store) sourceError(src Source, opts PullOptions, err error) error {
	var ie *Error
	if errors.As(err, &ie) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if src.Transport == TransportDocker {
		return registryError(src.String(), registryHost(src.Ref), opts.TLSVerify, err)
	}
	return fmt.Errorf("pull %s: %w", src, err)
}

func parsePlatform(p string) (v1.Platform, error) {
	if p == "" {
		return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil
	}
	plat, err := v1.ParsePlatform(p)
	if err != nil || plat.OS == "" || plat.Architecture == "" {
		return v1.Platform{}, fmt.Errorf("parse platform %q: want os/arch, e.g. linux/amd64", p)
	}
	return *plat, nil
}

// build makes the image's disk unless it exists. Builds of one ID are
// serialised across processes by a lock file in locks/, removed after.
func (s *Store) build(ctx context.Context, f *fetched, id string, cfg *v1.ConfigFile, progressW io.Writer) error {
	if _, err := os.Stat(filepath.Join(s.imageDir(id), recordFile)); err == nil {
		progress(progressW, "Image %s already cached\n", shortID(id))
		return nil
	}
	lock, err := lockFile(ctx, filepath.Join(s.dir, "locks", hexOf(id)))
	if err != nil {
		return err
	}
	defer lock.unlock(true)
	if _, err := os.Stat(filepath.Join(s.imageDir(id), recordFile)); err == nil {
		progress(progressW, "Image %s already cached\n", shortID(id))
		return nil
	}

	if f.layers != nil {
		if err := f.layers(); err != nil {
			return fmt.Errorf("read layers: %w", err)
		}
	}
	tmp, release, err := s.tempDir(hexOf(id)[:12])
	if err != nil {
		return err
	}
	defer release()
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return fmt.Errorf("build image %s: %w", shortID(id), err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(rootfs, 0, 0); err != nil {
			return fmt.Errorf("build image %s: %w", shortID(id), err)
		}
	}

	t0 := time.Now()
	layers, _ := f.img.Layers()
	var compressed int64
	for _, l := range layers {
		if n, err := l.Size(); err == nil {
			compressed += n
		}
	}
	progress(progressW, "Copying %d layer(s), %s\n", len(layers), humanSize(compressed))
	rc := mutate.Extract(f.img)
	x := newExtractor(rootfs, s.log, s.Limits)
	err = x.extract(ctx, rc, progressFunc(progressW))
	rc.Close()
	if err != nil {
		return err
	}
	if err := x.addMountPoints(); err != nil {
		return err
	}
	t1 := time.Now()
	progressEnd(progressW, "Extracted %s in %d files\n", humanSize(x.bytes), x.entries)

	disk := filepath.Join(tmp, diskFile)
	size, err := mkfs(ctx, rootfs, disk, "fcvm-"+hexOf(id)[:11])
	if err != nil {
		return fmt.Errorf("build image disk %s: %w", shortID(id), err)
	}
	if err := x.fixup(ctx, disk); err != nil {
		return fmt.Errorf("build image disk %s: %w", shortID(id), err)
	}
	t2 := time.Now()
	progress(progressW, "Wrote %s disk\n", humanSize(size))
	if err := os.RemoveAll(rootfs); err != nil {
		return fmt.Errorf("build image %s: %w", shortID(id), err)
	}
	rec := record{ID: id, Digest: f.digest, Config: configOf(cfg), Size: size, Created: cfg.Created.Time, Pulled: time.Now().UTC()}
	if err := s.commit(tmp, rec); err != nil {
		return err
	}
	s.log.Debug("image disk built", "id", id, "extract", t1.Sub(t0), "mkfs", t2.Sub(t1), "files", x.entries, "bytes", x.bytes, "disk", size)
	return nil
}

// commit makes the temp dir tmp, holding a finished disk, the image rec
// describes.
func (s *Store) commit(tmp string, rec record) error {
	disk := filepath.Join(tmp, diskFile)
	if err := os.Chmod(disk, 0o444); err != nil {
		return err
	}
	if err := syncFile(disk); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, recordFile), b, 0o644); err != nil {
		return err
	}
	// The temp dir becomes the image: its lock file goes with it.
	os.Remove(filepath.Join(tmp, tempLock))
	if err := os.Rename(tmp, s.imageDir(rec.ID)); err != nil {
		return fmt.Errorf("build image %s: %w", shortID(rec.ID), err)
	}
	return atomicfile.SyncDir(s.dir)
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func configOf(cf *v1.ConfigFile) Config {
	c := cf.Config
	out := Config{
		Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir,
		User: c.User, StopSignal: c.StopSignal, Labels: c.Labels,
	}
	for p := range c.ExposedPorts {
		out.ExposedPorts = append(out.ExposedPorts, p)
	}
	sort.Strings(out.ExposedPorts)
	return out
}

// tag points names at id under the store lock. It reports false when the
// image was removed meanwhile.
func (s *Store) tag(ctx context.Context, id string, names []string) (*Image, bool, error) {
	lock, err := s.lock(ctx)
	if err != nil {
		return nil, false, err
	}
	defer lock.unlock(false)
	if _, err := os.Stat(filepath.Join(s.imageDir(id), recordFile)); err != nil {
		return nil, false, nil
	}
	idx, err := s.readIndex()
	if err != nil {
		return nil, false, err
	}
	changed := false
	for _, n := range names {
		if idx.Refs[n] != id {
			idx.Refs[n] = id
			changed = true
		}
	}
	if changed {
		if err := s.writeIndexLocked(idx); err != nil {
			return nil, false, err
		}
	}
	img, err := s.load(id, refsTo(idx, id))
	return img, err == nil, err
}

func (s *Store) lock(ctx context.Context) (*fileLock, error) {
	return lockFile(ctx, filepath.Join(s.dir, "lock"))
}

const tempLock = ".lock"

// tempDir makes a directory under tmp/ that Prune leaves alone while this
// process holds it. release removes it.
func (s *Store) tempDir(prefix string) (string, func(), error) {
	dir, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), prefix+"-")
	if err != nil {
		return "", nil, fmt.Errorf("make temp dir: %w", err)
	}
	l, ok, err := tryLockFile(filepath.Join(dir, tempLock))
	if err != nil || !ok {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("make temp dir: lock %s: %v", dir, err)
	}
	return dir, func() {
		os.RemoveAll(dir)
		l.unlock(false)
	}, nil
}

// Lookup finds a cached image by name ("busybox" means
// docker.io/library/busybox:latest), full ID or unique ID prefix, without
// touching the network. It returns an error wrapping ErrNotFound when there
// is none.
func (s *Store) Lookup(refOrID string) (*Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	id, _, err := s.resolve(idx, refOrID)
	if err != nil {
		return nil, err
	}
	img, err := s.load(id, refsTo(idx, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notKnown(refOrID)
	}
	return img, err
}

func notKnown(refOrID string) error {
	return newError(ErrNotFound, refOrID, nil, "image %s not known locally: pull it with `fcvm image pull %s`", refOrID, refOrID)
}

// resolve finds the ID refOrID names, and the canonical name if it was a
// name in the index.
func (s *Store) resolve(idx *refIndex, refOrID string) (id, ref string, err error) {
	in := strings.TrimPrefix(refOrID, "docker://")
	if src, perr := ParseReference(refOrID, false); perr == nil && src.Transport == TransportDocker {
		n := canonicalName(src.Ref)
		if id, ok := idx.Refs[n]; ok {
			return id, n, nil
		}
	} else if perr == nil {
		return "", "", newError(ErrNotFound, refOrID, nil, "image %s: only registry names and IDs are kept locally: pull it with `fcvm image pull %s`", refOrID, refOrID)
	}
	if hex, ok := idPrefix(in); ok {
		ids, err := s.ids()
		if err != nil {
			return "", "", err
		}
		var found []string
		for _, id := range ids {
			if strings.HasPrefix(hexOf(id), hex) {
				found = append(found, id)
			}
		}
		switch len(found) {
		case 1:
			return found[0], "", nil
		case 0:
		default:
			return "", "", newError(ErrNotFound, refOrID, nil, "image ID %s is ambiguous (%d images match): give more of it", refOrID, len(found))
		}
	}
	if _, perr := ParseReference(refOrID, false); perr != nil {
		return "", "", perr
	}
	return "", "", notKnown(refOrID)
}

// idPrefix reports whether s can be (a prefix of) an image ID.
func idPrefix(s string) (string, bool) {
	hex, full := strings.CutPrefix(s, "sha256:")
	if len(hex) < 3 || len(hex) > 64 || (full && len(hex) != 64) {
		return "", false
	}
	for _, c := range hex {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return hex, true
}

// ids lists the IDs of the cached images.
func (s *Store) ids() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if len(e.Name()) == 64 && e.IsDir() {
			if _, ok := idPrefix(e.Name()); ok {
				ids = append(ids, "sha256:"+e.Name())
			}
		}
	}
	return ids, nil
}

// Ensure returns the image ref names: from the cache if it is there,
// pulling it otherwise. This is what `fcvm run` calls. An image ID or a
// registry name is looked up locally first; archives and podman's storage are read each time
// (cheaply: the disk is built only for an ID not cached yet), since their
// content can change under the same path.
func (s *Store) Ensure(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	src, err := ParseReference(ref, !opts.TLSVerify)
	if err != nil {
		return nil, err
	}
	if src.Transport == TransportDocker {
		// A bare hex string is first an image ID (prefix), as podman
		// takes it: a cached image must not send its ID to Docker Hub
		// as a name.
		if _, ok := idPrefix(ref); ok {
			if img, err := s.Lookup(ref); err == nil {
				return img, nil
			} else if !errors.Is(err, ErrNotFound) {
				return nil, err
			}
		}
		img, err := s.Lookup(canonicalName(src.Ref))
		if err == nil {
			return img, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	return s.pull(ctx, src, opts)
}

// List returns every cached image, newest first.
func (s *Store) List() ([]Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, id := range ids {
		img, err := s.load(id, refsTo(idx, id))
		if errors.Is(err, fs.ErrNotExist) {
			continue // being removed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *img)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Remove removes a name, or an image by ID. Removing an image's last name
// removes the image; removing by ID removes the image and all its names.
// An image in use is refused with an error wrapping ErrInUse.
func (s *Store) Remove(refOrID string) error {
	lock, err := s.lock(context.Background())
	if err != nil {
		return err
	}
	defer lock.unlock(false)
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	id, ref, err := s.resolve(idx, refOrID)
	if err != nil {
		return err
	}
	refs := refsTo(idx, id)
	if ref != "" && len(refs) > 1 {
		delete(idx.Refs, ref)
		return s.writeIndexLocked(idx)
	}
	if s.InUse != nil && s.InUse(id) {
		return newError(ErrInUse, refOrID, nil, "image %s is in use by a VM or a snapshot: remove them first (fcvm rm, fcvm snapshot rm)", refOrID)
	}
	for _, r := range refs {
		delete(idx.Refs, r)
	}
	if len(refs) > 0 {
		if err := s.writeIndexLocked(idx); err != nil {
			return err
		}
	}
	return s.deleteLocked(id)
}

// deleteLocked removes an image's directory: first renamed into tmp/, so a
// half-removed image never looks cached.
func (s *Store) deleteLocked(id string) error {
	trash, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "rm-")
	if err != nil {
		return fmt.Errorf("remove image %s: %w", shortID(id), err)
	}
	if err := os.Rename(s.imageDir(id), filepath.Join(trash, "image")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		os.Remove(trash)
		return fmt.Errorf("remove image %s: %w", shortID(id), err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove image %s: %w", shortID(id), err)
	}
	return nil
}

// Prune removes images without names that are not in use, and whatever
// pulls that died left in tmp/. It returns the images removed.
func (s *Store) Prune() ([]Image, error) {
	return s.prune(false)
}

// PruneAll removes every image not in use, named or not.
func (s *Store) PruneAll() ([]Image, error) {
	return s.prune(true)
}

func (s *Store) prune(all bool) ([]Image, error) {
	lock, err := s.lock(context.Background())
	if err != nil {
		return nil, err
	}
	defer lock.unlock(false)
	s.pruneTemp()
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	var removed []Image
	var errs []error
	for _, id := range ids {
		refs := refsTo(idx, id)
		if (len(refs) > 0 && !all) || (s.InUse != nil && s.InUse(id)) {
			continue
		}
		img, err := s.load(id, refs)
		if err != nil {
			img = &Image{ID: id, Refs: refs}
		}
		if len(refs) > 0 {
			for _, r := range refs {
				delete(idx.Refs, r)
			}
			if err := s.writeIndexLocked(idx); err != nil {
				return removed, err
			}
		}
		if err := s.deleteLocked(id); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, *img)
	}
	// Names whose image is gone (a crash between the two steps of a remove).
	stale := false
	for r, id := range idx.Refs {
		if !slices.Contains(ids, id) {
			delete(idx.Refs, r)
			stale = true
		}
	}
	if stale {
		if err := s.writeIndexLocked(idx); err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// pruneTemp removes temp dirs whose owner is gone (their lock is free) and
// build locks that a crashed pull left.
func (s *Store) pruneTemp() {
	locks := filepath.Join(s.dir, "locks")
	lents, _ := os.ReadDir(locks)
	for _, e := range lents {
		if l, ok, err := tryLockFile(filepath.Join(locks, e.Name())); err == nil && ok {
			l.unlock(true)
		}
	}
	tmp := filepath.Join(s.dir, "tmp")
	ents, _ := os.ReadDir(tmp)
	for _, e := range ents {
		p := filepath.Join(tmp, e.Name())
		if strings.HasPrefix(e.Name(), "rm-") {
			os.RemoveAll(p) // only made under the store lock, which we hold
			continue
		}
		l, ok, err := tryLockFile(filepath.Join(p, tempLock))
		if err != nil || !ok {
			continue
		}
		os.RemoveAll(p)
		l.unlock(false)
	}
}

// Keychain finds registry credentials the way podman does: the first of
// $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
// ~/.config/containers/auth.json and ~/.docker/config.json that has an
// entry for the registry, then docker's credential helpers.
func Keychain() authn.Keychain {
	return authn.NewMultiKeychain(authFiles{}, authn.DefaultKeychain)
}

var _ authn.Keychain = authFiles{}

func shortID(id string) string {
	h := hexOf(id)
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
