package e2e

import (
	"os"
	"testing"

	"github.com/fcvm/fcvm/internal/imagetest"
)

func TestZZWriteArchive(t *testing.T) {
	p := os.Getenv("ZZ_ARCHIVE")
	if p == "" {
		t.Skip()
	}
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, imagetest.Options{}), p)
}
