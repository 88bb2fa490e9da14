package qemu

import (
	"fmt"
	"strings"

	"github.com/fcvm/fcvm/internal/vmm"
)

// Paths of a machine's sockets inside its runtime dir.
const (
	channelSocket = "channel.sock"
	qmpSocket     = "qmp.sock"
)

// args builds QEMU's command line for cfg with guest RAM in the file mem
// ("" for anonymous memory). kvm selects the accelerator; tscKHz (0 for
// unknown) goes on the kernel command line for TCG; incoming is a
// migration URI to restore from ("" for a cold boot).
func args(cfg vmm.Config, mem string, kvm bool, tscKHz int, incoming string) ([]string, error) {
	if cfg.Kernel == "" {
		return nil, fmt.Errorf("qemu args: no kernel")
	}
	if cfg.VCPUs < 1 || cfg.MemoryMiB < 64 {
		return nil, fmt.Errorf("qemu args: %d vCPUs and %d MiB: need at least 1 vCPU and 64 MiB", cfg.VCPUs, cfg.MemoryMiB)
	}
	machine := "microvm,x-option-roms=off,rtc=off,isa-serial=on"
	a := []string{
		"-name", "fcvm-" + cfg.Name,
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
	}
	if kvm {
		a = append(a, "-accel", "kvm", "-cpu", "host")
	} else {
		// tb-size caps the translated-code cache (RSS 1.5 GiB → ~575 MiB).
		// It is private to each QEMU, so clones, which mostly idle in code
		// the original already ran, get a smaller one: it is most of what
		// a TCG clone does not share.
		tb := 256
		if incoming != "" {
			tb = 64
		}
		a = append(a, "-accel", fmt.Sprintf("tcg,tb-size=%d", tb), "-cpu", "max")
	}
	a = append(a,
		"-smp", fmt.Sprint(cfg.VCPUs),
		"-m", fmt.Sprintf("%dM", cfg.MemoryMiB),
	)
	if mem != "" {
		share := "on"
		if incoming != "" {
			// A clone maps the snapshot's RAM privately: pages stay shared
			// through the page cache until the clone writes them.
			share = "off"
		}
		a = append(a, "-object", fmt.Sprintf("memory-backend-file,id=ram,size=%dM,mem-path=%s,share=%s", cfg.MemoryMiB, mem, share))
		machine += ",memory-backend=ram"
	}
	a = append(a, "-machine", machine)

	// reboot=t: the microvm machine has no keyboard controller to reset
	// through, so with reboot=k the guest's reboot went nowhere and QEMU
	// ran on until Stop's grace ran out (5 s of every foreground run); a
	// triple fault resets at once, and -no-reboot makes that QEMU's exit.
	cmdline := []string{"console=ttyS0", "reboot=t", "panic=-1", "quiet", "loglevel=4"}
	if !kvm && tscKHz > 0 {
		cmdline = append(cmdline, fmt.Sprintf("tsc_early_khz=%d", tscKHz))
	}
	if cfg.Cmdline != "" {
		cmdline = append(cmdline, cfg.Cmdline)
	}
	cmdline = append(cmdline, vmm.ChannelParam+"=serial")
	a = append(a, "-kernel", cfg.Kernel)
	if cfg.Initrd != "" {
		a = append(a, "-initrd", cfg.Initrd)
	}
	a = append(a, "-append", strings.Join(cmdline, " "))

	// The console goes to QEMU's stdout, which the driver copies into a
	// size-capped log: a file chardev grows for as long as the guest
	// writes.
	console := "null"
	if cfg.ConsoleLog != "" {
		console = "stdio"
	}
	a = append(a, "-serial", console)

	for i, d := range cfg.Disks {
		if len(d.ID) > 20 || strings.ContainsAny(d.ID, ",=") {
			return nil, fmt.Errorf("qemu args: disk serial %q: at most 20 characters, no ',' or '='", d.ID)
		}
		if strings.Contains(d.Path, ",") {
			return nil, fmt.Errorf("qemu args: disk path %q contains ','", d.Path)
		}
		ro := ""
		if d.ReadOnly {
			ro = ",readonly=on"
		}
		a = append(a,
			"-drive", fmt.Sprintf("id=d%d,file=%s,format=raw,if=none,cache=unsafe,discard=unmap%s", i, d.Path, ro),
			"-device", fmt.Sprintf("virtio-blk-device,drive=d%d,serial=%s", i, d.ID),
		)
	}
	if cfg.Net != nil {
		a = append(a,
			"-netdev", fmt.Sprintf("tap,id=n0,ifname=%s,script=no,downscript=no", cfg.Net.TAP),
			"-device", fmt.Sprintf("virtio-net-device,netdev=n0,mac=%s", cfg.Net.MAC),
		)
	}
	a = append(a,
		"-device", "virtio-serial-device",
		"-chardev", fmt.Sprintf("socket,id=ch0,path=%s/%s,server=on,wait=off", cfg.RuntimeDir, channelSocket),
		"-device", "virtserialport,chardev=ch0,name=fcvm.0",
		"-qmp", fmt.Sprintf("unix:%s/%s,server=on,wait=off", cfg.RuntimeDir, qmpSocket),
	)
	if incoming != "" {
		a = append(a, "-incoming", incoming)
	}
	return a, nil
}
