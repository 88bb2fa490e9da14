package image_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/imagetest"
)

// BenchmarkPull is a cold pull of the busybox test image from a local
// registry: manifest, config, layer download, flatten, mkfs.ext4, rename.
func BenchmarkPull(b *testing.B) {
	addr := imagetest.StartRegistry(b)
	imagetest.Push(b, imagetest.Busybox(b, imagetest.Options{}), addr+"/test/busybox:1")
	root := b.TempDir()
	log := benchLogger()
	i := 0
	for b.Loop() {
		i++
		s, err := image.Open(filepath.Join(root, fmt.Sprint(i)), log)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Pull(context.Background(), addr+"/test/busybox:1", image.DefaultPullOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPullCached is a pull of an image already cached: the registry
// round trips for manifest and config only.
func BenchmarkPullCached(b *testing.B) {
	addr := imagetest.StartRegistry(b)
	imagetest.Push(b, imagetest.Busybox(b, imagetest.Options{}), addr+"/test/busybox:1")
	s, err := image.Open(b.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Pull(ctx, addr+"/test/busybox:1", image.DefaultPullOptions()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Pull(ctx, addr+"/test/busybox:1", image.DefaultPullOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnsureCached is what `fcvm run` pays for an image it has.
func BenchmarkEnsureCached(b *testing.B) {
	src := imagetest.Busybox(b, imagetest.Options{})
	archive := filepath.Join(b.TempDir(), "a.tar")
	imagetest.WriteDockerArchive(b, src, archive, "localhost/test/busybox:1")
	s, err := image.Open(b.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Pull(ctx, "docker-archive:"+archive, image.DefaultPullOptions()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Ensure(ctx, "localhost/test/busybox:1", image.DefaultPullOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

func benchLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// BenchmarkEnsureCachedArchives is Ensure of a cached image named by each
// local transport: the file is read again, the disk is not rebuilt.
func BenchmarkEnsureCachedArchives(b *testing.B) {
	src := imagetest.Busybox(b, imagetest.Options{})
	dir := b.TempDir()
	imagetest.WriteOCIArchive(b, src, filepath.Join(dir, "oci.tar"))
	imagetest.WriteOCILayout(b, src, filepath.Join(dir, "layout"), "")
	imagetest.WriteDockerArchive(b, src, filepath.Join(dir, "docker.tar"), "localhost/test/busybox:1")
	for _, ref := range []string{"oci-archive:" + dir + "/oci.tar", "oci:" + dir + "/layout", "docker-archive:" + dir + "/docker.tar"} {
		b.Run(ref[:strings.Index(ref, ":")], func(b *testing.B) {
			s, err := image.Open(b.TempDir(), slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if _, err := s.Pull(ctx, ref, image.DefaultPullOptions()); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := s.Ensure(ctx, ref, image.DefaultPullOptions()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
