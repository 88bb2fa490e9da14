// Command bootcheck is a test /init: it loads the initramfs's kernel
// modules with guestmod, prints what loaded and how long it took, and
// powers the VM off. The artifacts tests boot it under QEMU.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/guestmod"
)

func main() {
	start := time.Now()
	if err := syscall.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		fmt.Println("BOOTCHECK mount proc:", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	err := guestmod.LoadAll(log)
	took := time.Since(start)
	mods, _ := os.ReadFile("/proc/modules")
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(mods)), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	uptime, _ := os.ReadFile("/proc/uptime")
	fmt.Printf("BOOTCHECK err=%v took=%s uptime=%s\n", err, took, strings.Fields(string(uptime))[0])
	fmt.Printf("BOOTCHECK modules=%s\n", strings.Join(names, ","))
	syscall.Mount("sysfs", "/sys", "sysfs", 0, "")
	blocks, _ := os.ReadDir("/sys/block")
	var disks []string
	for _, b := range blocks {
		disks = append(disks, b.Name())
	}
	fmt.Printf("BOOTCHECK disks=%s\n", strings.Join(disks, ","))
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
}
