package qemu

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/fcvm/fcvm/internal/rotatelog"
)

// TestConsoleLogIsCapped starts a stand-in for QEMU that writes 20 MB to
// its serial console (stdout, with -serial stdio), as a guest flooding
// its console does: the console log keeps the newest output within its
// cap, and holds all of it once Wait returns.
func TestConsoleLogIsCapped(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "qemu-system-x86_64")
	script := "#!/bin/sh\nhead -c 20000000 /dev/zero | tr '\\0' x\necho\necho the end\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.RuntimeDir = dir
	cfg.ConsoleLog = filepath.Join(dir, "console.log")
	d := &Driver{Binary: bin, Accel: "tcg"}
	m, err := d.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cfg.ConsoleLog, cfg.ConsoleLog + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > rotatelog.DefaultLimit {
			t.Errorf("%s holds %d bytes, over the cap of %d", p, st.Size(), rotatelog.DefaultLimit)
		}
	}
	end, err := rotatelog.Tail(cfg.ConsoleLog, 8)
	if err != nil || string(end) != "the end\n" {
		t.Errorf("console log ends %q, %v: want the guest's last line", end, err)
	}
}
