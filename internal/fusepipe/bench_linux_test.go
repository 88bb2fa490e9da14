package fusepipe

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Benchmarks run each operation on the mount and on the directory behind
// it; bench/fusepipe prints the same comparison as a table.

func benchTargets(b *testing.B, o shareOpts) map[string]string {
	s := newShare(b, o)
	if err := os.WriteFile(filepath.Join(s.dir, "data"), make([]byte, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	return map[string]string{"direct": s.dir, "fusepipe": s.mnt}
}

func BenchmarkStat(b *testing.B) {
	for name, dir := range benchTargets(b, shareOpts{}) {
		b.Run(name, func(b *testing.B) {
			p := filepath.Join(dir, "data")
			var st unix.Stat_t
			for b.Loop() {
				if err := unix.Stat(p, &st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchIO(b *testing.B, write bool, o shareOpts) {
	for name, dir := range benchTargets(b, o) {
		b.Run(name, func(b *testing.B) {
			f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			b.SetBytes(4096)
			var off int64
			for b.Loop() {
				off = (off + 4096) % (1 << 20)
				if write {
					_, err = f.WriteAt(buf, off)
				} else {
					_, err = f.ReadAt(buf, off)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRead4K(b *testing.B)  { benchIO(b, false, shareOpts{}) }
func BenchmarkWrite4K(b *testing.B) { benchIO(b, true, shareOpts{}) }
func BenchmarkWrite4KWriteback(b *testing.B) {
	benchIO(b, true, shareOpts{mount: MountOptions{Writeback: true}})
}

func BenchmarkOpenClose(b *testing.B) {
	for name, dir := range benchTargets(b, shareOpts{}) {
		b.Run(name, func(b *testing.B) {
			p := filepath.Join(dir, "data")
			for b.Loop() {
				fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				unix.Close(fd)
			}
		})
	}
}

func BenchmarkCreateUnlink(b *testing.B) {
	for name, dir := range benchTargets(b, shareOpts{}) {
		b.Run(name, func(b *testing.B) {
			p := filepath.Join(dir, "scratch")
			for b.Loop() {
				fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err != nil {
					b.Fatal(err)
				}
				unix.Close(fd)
				if err := unix.Unlink(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReaddir1000(b *testing.B) {
	for name, dir := range benchTargets(b, shareOpts{}) {
		b.Run(name, func(b *testing.B) {
			d := filepath.Join(dir, "dir")
			if name == "direct" {
				os.Mkdir(d, 0o755)
				for i := range 1000 {
					os.WriteFile(filepath.Join(d, fmt.Sprint(i)), nil, 0o644)
				}
			}
			for b.Loop() {
				ents, err := os.ReadDir(d)
				if err != nil || len(ents) != 1000 {
					b.Fatal(len(ents), err)
				}
			}
		})
	}
}

// BenchmarkRoundTrip is the wire alone: a getattr answered by the server
// with no kernel in between.
func BenchmarkRoundTrip(b *testing.B) {
	s := newShare(b, shareOpts{})
	_ = s
	hostEnd, guestEnd := socketPair(b)
	srv, err := NewServer(s.dir, ServerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	go srv.ServeConn(b.Context(), hostEnd)
	defer srv.Close()
	c, err := dial(guestEnd, testLog(b), false, 10e9)
	if err != nil {
		b.Fatal(err)
	}
	defer c.close()
	for b.Loop() {
		if _, e := c.call(nil, &Request{Op: OpGetattr, Node: rootNode}); e != 0 {
			b.Fatal(e)
		}
	}
}
