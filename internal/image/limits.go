package image

import "fmt"

// Limits bound what extracting one image may cost the host. Zero fields
// take the defaults.
type Limits struct {
	// MaxBytes bounds the sum of every entry's size as its header states
	// it (a sparse file's holes included), names, link targets and
	// extended headers.
	MaxBytes int64
	// MaxEntries bounds the number of entries read, kept or not, and of
	// files and directories made (parents included).
	MaxEntries int64
}

// Default limits: far above what real images need (the largest common
// ones hold a few GiB in some hundred thousand files), far below what
// fills a host.
const (
	DefaultMaxBytes   = 64 << 30
	DefaultMaxEntries = 4 << 20

	// maxHeld bounds the metadata kept until the end of the stream
	// (directory entries, pending hardlinks, xattr values for debugfs):
	// it is memory, not disk.
	maxHeld = 256 << 20
)

func (l Limits) orDefault() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// limitSize writes a limit as people set it: 64 GiB, not 68.7 GB.
func limitSize(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return humanSize(n)
}
