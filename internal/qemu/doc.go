// Package qemu is the VMM driver for QEMU's microvm machine: KVM when
// this host's KVM is hardware-assisted (see package kvm), TCG software
// emulation when it is not (cloud VMs without nested virtualisation, PVM
// sandboxes, and our CI). FCVM_QEMU_ACCEL=kvm|tcg forces one.
//
// The guest boots the uncompressed ELF vmlinux directly (PVH), with
// virtio-mmio block devices found by serial, a virtio-serial port named
// fcvm.0 backed by a Unix socket as the host-guest channel, the serial
// console on QEMU's stdout (copied into Config.ConsoleLog, which rotates
// at rotatelog.DefaultLimit so a guest cannot fill the disk), and QMP on
// a second Unix socket for control. QEMU runs
// with -no-reboot, so a guest reboot or panic ends the process: that is how
// a guest powers off.
//
// # Snapshots
//
// Guest RAM is a shared file mapping in the runtime dir, and a snapshot
// (Machine.Snapshot) is a migration to a file with x-ignore-shared: the
// state file holds only device state and the RAM file is copied (reflinked)
// beside it while the guest is paused. A clone (Driver.Restore) maps that
// RAM file privately (share=off), so every clone reads the same page-cache
// pages until it writes.
//
// # Sharp edges
//
// microvm under TCG can hang calibrating the TSC against the PIT; the
// driver passes tsc_early_khz from the host's clock. QEMU's translation
// cache is capped (tb-size) because its default costs over 1 GiB of RSS per
// VM.
package qemu
