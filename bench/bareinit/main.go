// Command bareinit is the whole initramfs of bench/run's bare-kernel boot:
// as /init it ends the guest at once (a reboot, which with reboot=k and
// QEMU's -no-reboot ends the VMM), so that boot measures the kernel and
// the VMM alone, the floor under everything fcvm's guest does.
package main

import "golang.org/x/sys/unix"

func main() {
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {} // /init must not exit: the kernel would panic
}
