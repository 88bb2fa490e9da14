package artifacts

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hostTSCkHz reads the host's TSC frequency for tsc_early_khz, which
// keeps microvm guests under TCG from hanging in PIT calibration.
func hostTSCkHz(t testing.TB) int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`cpu MHz\s*:\s*([0-9.]+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no cpu MHz in /proc/cpuinfo")
	}
	mhz, _ := strconv.ParseFloat(string(m[1]), 64)
	return int(mhz * 1000)
}

// buildBootcheck compiles testdata/bootcheck, a static /init that loads
// modules with guestmod and reports.
func buildBootcheck(t testing.TB) string {
	out := filepath.Join(t.TempDir(), "bootcheck")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/bootcheck")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build bootcheck: %v\n%s", err, b)
	}
	return out
}

// bootResult is what bootcheck printed.
type bootResult struct {
	fields  map[string]string
	console string
	took    time.Duration
}

// bootQEMU boots kernel+initrd under QEMU microvm with TCG and one
// virtio-blk disk, and collects bootcheck's report.
func bootQEMU(t testing.TB, kernel, initrd string) bootResult {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-machine", "microvm,rtc=on", "-accel", "tcg,tb-size=256", "-cpu", "max", "-smp", "1", "-m", "512",
		"-no-reboot", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-kernel", kernel, "-initrd", initrd,
		"-drive", "id=d0,file="+disk+",format=raw,if=none",
		"-device", "virtio-blk-device,drive=d0",
		"-append", fmt.Sprintf("console=ttyS0 panic=-1 reboot=t tsc_early_khz=%d loglevel=4", hostTSCkHz(t)),
	)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r := bootResult{fields: map[string]string{}, console: string(out), took: time.Since(start)}
	if err != nil {
		t.Fatalf("qemu: %v; console:\n%s", err, tail(string(out), 40))
	}
	sc := bufio.NewScanner(strings.NewReader(r.console))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "BOOTCHECK ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				r.fields[k] = v
			}
		}
	}
	if len(r.fields) == 0 {
		t.Fatalf("bootcheck printed nothing; console:\n%s", tail(r.console, 40))
	}
	return r
}

// TestBootDebianKernelModules boots Debian's vmlinux with an initramfs
// built by writeInitramfs, and checks that guestmod loaded every module
// and that virtio_mmio found the disk QEMU announced on the command line.
func TestBootDebianKernelModules(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 (apt-get install qemu-system-x86): %v", err)
	}
	tree := debianKernelTree(t)
	work := t.TempDir()
	b := &builder{log: testLogger(t)}
	k, err := b.kernelFromTree(tree, work)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(work, "initrd.cpio")
	size, err := writeInitramfs(context.Background(), initrd, buildBootcheck(t), filepath.Join(work, "modules", k.release))
	if err != nil {
		t.Fatal(err)
	}
	r := bootQEMU(t, filepath.Join(work, "vmlinux"), initrd)
	t.Logf("initramfs %s; boot to poweroff %s; guest uptime at report %ss; module loading %s",
		humanSize(size), r.took.Round(time.Millisecond), r.fields["uptime"], r.fields["took"])
	for _, l := range strings.Split(r.console, "\n") {
		if strings.Contains(l, "load module") || strings.Contains(l, "loaded kernel modules") {
			t.Log(strings.TrimSpace(l))
		}
	}
	if r.fields["err"] != "<nil>" {
		t.Fatalf("guestmod.LoadAll: %s; console:\n%s", r.fields["err"], tail(r.console, 40))
	}
	loaded := map[string]bool{}
	for _, m := range strings.Split(r.fields["modules"], ",") {
		loaded[m] = true
	}
	for _, w := range GuestModules {
		if !loaded[modName(w)] {
			t.Errorf("module %s not loaded; /proc/modules has %s", w, r.fields["modules"])
		}
	}
	if !strings.Contains(r.fields["disks"], "vda") {
		t.Errorf("no vda: virtio_mmio did not get QEMU's virtio_mmio.device= parameters (disks %q)", r.fields["disks"])
	}
}

// BenchmarkBootInitramfs boots Debian's vmlinux to bootcheck's report
// under TCG with three initramfs variants: uncompressed with module
// signatures stripped (what setup builds), gzipped, and uncompressed with
// signatures kept, to choose initrdCompression and stripSignatures.
// Run: go test -run XXX -bench BootInitramfs -benchtime 5x
// ./internal/artifacts. guest-s is the guest's uptime when /init
// reported; mod-s is guestmod.LoadAll's time; medians.
func BenchmarkBootInitramfs(b *testing.B) {
	tree := debianKernelTree(b)
	agent := buildBootcheck(b)
	variant := func(strip bool) (vmlinux, initrd string) {
		defer func(old bool) { stripSignatures = old }(stripSignatures)
		stripSignatures = strip
		work := b.TempDir()
		k, err := (&builder{log: testLogger(b)}).kernelFromTree(tree, work)
		if err != nil {
			b.Fatal(err)
		}
		initrd = filepath.Join(work, "initrd.cpio")
		if _, err := writeInitramfs(context.Background(), initrd, agent, filepath.Join(work, "modules", k.release)); err != nil {
			b.Fatal(err)
		}
		return filepath.Join(work, "vmlinux"), initrd
	}
	vmlinux, stripped := variant(true)
	_, signed := variant(false)
	gz := stripped + ".gz"
	if out, err := exec.Command("sh", "-c", "gzip -6 -c "+stripped+" > "+gz).CombinedOutput(); err != nil {
		b.Fatalf("gzip: %v %s", err, out)
	}
	// One boot to warm the page cache and QEMU, then the variants
	// alternate so that load from elsewhere hits them alike.
	bootQEMU(b, vmlinux, stripped)
	b.ResetTimer()
	kinds := []struct {
		name, initrd string
		guest, mod   []float64
	}{{name: "none", initrd: stripped}, {name: "gzip", initrd: gz}, {name: "signed", initrd: signed}}
	for i := 0; i < b.N; i++ {
		for k := range kinds {
			r := bootQEMU(b, vmlinux, kinds[k].initrd)
			up, _ := strconv.ParseFloat(r.fields["uptime"], 64)
			mod, _ := time.ParseDuration(r.fields["took"])
			kinds[k].guest = append(kinds[k].guest, up)
			kinds[k].mod = append(kinds[k].mod, mod.Seconds())
		}
	}
	for _, k := range kinds {
		b.ReportMetric(median(k.guest), k.name+"-guest-s")
		b.ReportMetric(median(k.mod), k.name+"-mod-s")
	}
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkGuestPodman boots the current guest artifacts of
// $FCVM_DATA_DIR (run `fcvm setup` first) with testdata/rootfscheck as
// /init: it mounts the base rootfs under an overlay as fc-agent will and
// runs podman with the rootfs's containers.conf (crun, cgroupfs, file
// events) with --network none and host, runc, and --init. It fails if
// any of them fails and reports each one's time in the guest, in
// seconds. Run: FCVM_DATA_DIR=... go test -run XXX -bench GuestPodman
// -benchtime 1x ./internal/artifacts
func BenchmarkGuestPodman(b *testing.B) {
	dirs := os.Getenv("FCVM_DATA_DIR")
	set, err := Load(dirs)
	if err != nil {
		b.Fatalf("%v (set FCVM_DATA_DIR to a data dir where fcvm setup ran)", err)
	}
	out := filepath.Join(b.TempDir(), "rootfscheck")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/rootfscheck")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build rootfscheck: %v\n%s", err, o)
	}
	initrd := filepath.Join(b.TempDir(), "initrd.cpio")
	if _, err := writeInitramfs(context.Background(), initrd, out, set.modulesDir()); err != nil {
		b.Fatal(err)
	}
	want := map[string]string{ // step: expected err field
		"version": "<nil>", "info": "<nil>", "run-none": "exit status 3",
		"run-host": "<nil>", "run-runc": "<nil>", "run-init": "<nil>",
	}
	took := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		q := exec.CommandContext(ctx, "qemu-system-x86_64",
			"-machine", "microvm,rtc=on", "-accel", "tcg,tb-size=256", "-cpu", "max", "-smp", "1", "-m", "1024",
			"-no-reboot", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
			"-kernel", set.Kernel, "-initrd", initrd,
			"-drive", "id=d0,file="+set.Rootfs+",format=raw,if=none,readonly=on",
			"-device", "virtio-blk-device,drive=d0",
			"-append", fmt.Sprintf("console=ttyS0 panic=-1 reboot=t tsc_early_khz=%d loglevel=4", hostTSCkHz(b)))
		console, err := q.CombinedOutput()
		cancel()
		if err != nil {
			b.Fatalf("qemu: %v\n%s", err, tail(string(console), 40))
		}
		seen := 0
		for _, line := range strings.Split(string(console), "\n") {
			rest, ok := strings.CutPrefix(strings.TrimSpace(line), "RFCHECK ")
			if !ok {
				continue
			}
			if strings.HasPrefix(rest, "FAIL") {
				b.Fatalf("%s\n%s", rest, tail(string(console), 40))
			}
			f := strings.Fields(rest)
			if len(f) < 3 || want[f[0]] == "" {
				continue
			}
			seen++
			errField := strings.TrimPrefix(rest[len(f[0])+1:strings.Index(rest, " took=")], "err=")
			if errField != want[f[0]] {
				b.Errorf("%s: err=%s, want %s: %s", f[0], errField, want[f[0]], rest)
			}
			for _, kv := range f {
				if v, ok := strings.CutPrefix(kv, "took="); ok {
					d, _ := time.ParseDuration(v)
					took[f[0]] = append(took[f[0]], d.Seconds())
				}
			}
		}
		if seen != len(want) {
			b.Fatalf("saw %d of %d podman steps:\n%s", seen, len(want), tail(string(console), 40))
		}
	}
	for step, d := range took {
		b.ReportMetric(median(d), step+"-s")
	}
}
