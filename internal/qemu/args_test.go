package qemu

import (
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/vmm"
)

func testConfig() vmm.Config {
	return vmm.Config{
		Name: "t", RuntimeDir: "/run/fcvm/x", Kernel: "/k/vmlinux", Initrd: "/k/initrd",
		VCPUs: 1, MemoryMiB: 256,
		Disks: []vmm.Disk{{ID: "base", Path: "/a/rootfs.ext4", ReadOnly: true}, {ID: "upper", Path: "/v/upper.ext4"}},
		Net:   &vmm.Net{TAP: "tap0", MAC: "02:fc:00:00:00:02"},
	}
}

const testMem = "/run/fcvm/x/mem.ram"

func TestArgsColdBoot(t *testing.T) {
	a, err := args(testConfig(), testMem, false, 2000000, "")
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(a, " ")
	for _, want := range []string{
		"-machine microvm,x-option-roms=off,rtc=off,isa-serial=on,memory-backend=ram",
		"mem-path=/run/fcvm/x/mem.ram,share=on",
		"tcg,tb-size=256",
		"tsc_early_khz=2000000",
		"-no-reboot",
		"reboot=t", // the guest's reboot must end QEMU (no keyboard controller on microvm)
		"virtio-blk-device,drive=d0,serial=base",
		"readonly=on",
		"tap,id=n0,ifname=tap0",
		"mac=02:fc:00:00:00:02",
		"path=/run/fcvm/x/channel.sock,server=on,wait=off",
		"virtserialport,chardev=ch0,name=fcvm.0",
		"fcvm.channel=serial",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("args lack %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "-incoming") {
		t.Errorf("cold boot has -incoming: %s", line)
	}
}

func TestArgsClone(t *testing.T) {
	a, err := args(testConfig(), testMem, false, 0, "defer")
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(a, " ")
	// A clone maps the snapshot's RAM privately so clones share page cache.
	for _, want := range []string{"share=off", "-incoming defer", "tb-size=64"} {
		if !strings.Contains(line, want) {
			t.Errorf("clone args lack %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "tsc_early_khz") {
		t.Errorf("unknown TSC still passed: %s", line)
	}
}

func TestArgsKVM(t *testing.T) {
	a, _ := args(testConfig(), testMem, true, 2000000, "")
	line := strings.Join(a, " ")
	if !strings.Contains(line, "-accel kvm -cpu host") || strings.Contains(line, "tsc_early_khz") {
		t.Errorf("KVM args: %s", line)
	}
}

func TestArgsBadInput(t *testing.T) {
	for name, mod := range map[string]func(*vmm.Config){
		"no kernel":    func(c *vmm.Config) { c.Kernel = "" },
		"no vcpus":     func(c *vmm.Config) { c.VCPUs = 0 },
		"tiny memory":  func(c *vmm.Config) { c.MemoryMiB = 16 },
		"long serial":  func(c *vmm.Config) { c.Disks[0].ID = strings.Repeat("x", 21) },
		"comma serial": func(c *vmm.Config) { c.Disks[0].ID = "a,b" },
		"comma path":   func(c *vmm.Config) { c.Disks[0].Path = "/a,b" },
	} {
		c := testConfig()
		mod(&c)
		if _, err := args(c, testMem, false, 0, ""); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
