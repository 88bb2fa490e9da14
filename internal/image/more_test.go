package image_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/imagetest"
)

// cancelOn cancels a context when a progress line contains a word.
type cancelOn struct {
	word   string
	cancel context.CancelFunc
}

func (c cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.word) {
		c.cancel()
	}
	return len(p), nil
}

func TestPullInterrupted(t *testing.T) {
	src := imagetest.Busybox(t, imagetest.Options{})
	archive := filepath.Join(t.TempDir(), "a.tar")
	imagetest.WriteOCIArchive(t, src, archive)
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := image.DefaultPullOptions()
	opts.Progress = cancelOn{"Copying", cancel}
	_, err := s.Pull(ctx, "oci-archive:"+archive, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pull: %v, want context.Canceled", err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("interrupted pull left %d images", len(list))
	}
	checkClean(t, s)
}

func TestPullByDigest(t *testing.T) {
	addr := imagetest.StartRegistry(t)
	src := imagetest.Busybox(t, imagetest.Options{})
	imagetest.Push(t, src, addr+"/test/busybox:1")
	dg, err := src.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref := addr + "/test/busybox@" + dg.String()
	s := newStore(t)
	img, err := s.Pull(context.Background(), ref, image.DefaultPullOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Refs) != 1 || img.Refs[0] != ref || img.Digest != dg.String() {
		t.Errorf("pulled by digest: refs %v digest %s", img.Refs, img.Digest)
	}
	if _, err := s.Lookup(ref); err != nil {
		t.Errorf("Lookup by digest: %v", err)
	}
}

func TestPullPlatform(t *testing.T) {
	addr := imagetest.StartRegistry(t)
	amd := imagetest.Busybox(t, imagetest.Options{Cmd: []string{"echo", "amd64"}})
	arm := imagetest.Busybox(t, imagetest.Options{Cmd: []string{"echo", "arm64"}})
	arm = withArch(t, arm, "arm64")
	both := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	armOnly := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	pushIndex(t, both, addr+"/test/multi:1")
	pushIndex(t, armOnly, addr+"/test/multi:arm")
	s := newStore(t)
	opts := image.DefaultPullOptions()
	opts.Platform = "linux/amd64"
	img, err := s.Pull(context.Background(), addr+"/test/multi:1", opts)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != imagetest.ID(t, amd) || strings.Join(img.Config.Cmd, " ") != "echo amd64" {
		t.Errorf("picked %s %v, want the amd64 image", img.ID, img.Config.Cmd)
	}
	_, err = s.Pull(context.Background(), addr+"/test/multi:arm", opts)
	if !errors.Is(err, image.ErrNotFound) || !strings.Contains(err.Error(), "has no linux/amd64 variant (it has: linux/arm64)") {
		t.Errorf("arm64-only index: %v", err)
	}
	// A single-platform image for another architecture.
	imagetest.Push(t, arm, addr+"/test/arm:1")
	_, err = s.Pull(context.Background(), addr+"/test/arm:1", opts)
	if !errors.Is(err, image.ErrNotFound) || !strings.Contains(err.Error(), "is for linux/arm64, not linux/amd64") {
		t.Errorf("arm64 image: %v", err)
	}
	checkClean(t, s)
}

func withArch(t *testing.T, img v1.Image, arch string) v1.Image {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func pushIndex(t *testing.T, idx v1.ImageIndex, ref string) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
}

// TestPruneCrashLeftovers: a build lock and temp dir whose process died
// are reclaimed by Prune.
func TestPruneCrashLeftovers(t *testing.T) {
	s := newStore(t)
	for _, p := range []string{"locks/" + strings.Repeat("a", 64), "tmp/aaaaaaaaaaaa-1/.lock"} {
		p = filepath.Join(s.Dir(), p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, s)
}
