// Package kvm tells whether this host's KVM can run fcvm's guests, and why
// not when it cannot.
//
// A /dev/kvm that opens and answers is not enough. Some cloud sandboxes
// provide KVM without hardware virtualisation: PVM (the kvm_pvm module)
// runs only guest kernels built for it, and a stock kernel such as the
// Debian one fcvm boots faults or crawls under it (measured on such a
// host: a "KVM internal error" after 49 s, where TCG reaches the agent in
// 2 s). So KVM counts as usable only when the CPU advertises VMX or SVM
// and the kvm module in use is not PVM.
//
// FCVM_QEMU_ACCEL=kvm or tcg overrides the choice for the qemu driver (see
// [Accel]); Firecracker has no software fallback and follows [Probe].
package kvm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// Status is what Probe found.
type Status struct {
	// Usable: guests can run under this KVM at hardware speed.
	Usable bool
	// Detail says what was found, in a sentence for fcvm doctor.
	Detail string
	// Fix says what to do when KVM is not usable.
	Fix string
}

// Host is where Probe looks; tests point it at fixtures.
type Host struct {
	Device    string // /dev/kvm
	CPUInfo   string // /proc/cpuinfo
	SysModPVM string // /sys/module/kvm_pvm
}

// DefaultHost is the running machine.
var DefaultHost = Host{Device: "/dev/kvm", CPUInfo: "/proc/cpuinfo", SysModPVM: "/sys/module/kvm_pvm"}

// Probe checks the running machine, once per process: the driver choice,
// the accelerator and doctor all ask, and the answer cannot change while
// fcvm runs.
var Probe = sync.OnceValue(DefaultHost.Probe)

// Probe checks h.
func (h Host) Probe() Status {
	f, err := os.OpenFile(h.Device, os.O_RDWR, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return Status{
			Detail: h.Device + " does not exist (no hardware virtualisation, or the kvm module is not loaded)",
			Fix:    "sudo modprobe kvm_intel (or kvm_amd); in a cloud VM enable nested virtualisation; meanwhile --vmm qemu runs without KVM",
		}
	case errors.Is(err, os.ErrPermission):
		return Status{
			Detail: h.Device + ": permission denied",
			Fix:    "sudo usermod -aG kvm $USER, then log in again (or run as root)",
		}
	case err != nil:
		return Status{Detail: fmt.Sprintf("open %s: %v", h.Device, err), Fix: "check the kvm module (lsmod | grep kvm); meanwhile use --vmm qemu"}
	}
	defer f.Close()
	if err := apiVersion(f); err != nil {
		return Status{Detail: err.Error(), Fix: "use --vmm qemu"}
	}
	return h.hardware()
}

// hardware is Probe's verdict on a /dev/kvm that answers.
func (h Host) hardware() Status {
	if _, err := os.Stat(h.SysModPVM); err == nil {
		return Status{
			Detail: h.Device + " is PVM (kvm_pvm: KVM without hardware virtualisation), which runs only guest kernels built for PVM; fcvm's guest kernel is not one",
			Fix:    "--vmm qemu uses TCG here; on a host with VMX or SVM, KVM is used by itself",
		}
	}
	vt, err := hardwareVirt(h.CPUInfo)
	if err != nil {
		return Status{Detail: err.Error(), Fix: "use --vmm qemu"}
	}
	if vt == "" {
		return Status{
			Detail: h.Device + " opens, but the CPU advertises neither VMX nor SVM: this KVM is not hardware-assisted",
			Fix:    "--vmm qemu uses TCG here; enable nested virtualisation for fast guests",
		}
	}
	return Status{Usable: true, Detail: fmt.Sprintf("%s works (API version 12, %s)", h.Device, vt)}
}

// hardwareVirt returns "VMX" or "SVM" when the CPU flags have it, else "".
func hardwareVirt(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read cpu flags: %w", err)
	}
	defer f.Close()
	return flagsVirt(f)
}

func flagsVirt(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(v) {
			switch fl {
			case "vmx":
				return "VMX", nil
			case "svm":
				return "SVM", nil
			}
		}
		return "", nil // every CPU has the same flags: the first line says
	}
	return "", sc.Err()
}

// Accelerators for the qemu driver.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// AccelEnv names the variable that overrides Accel's choice.
const AccelEnv = "FCVM_QEMU_ACCEL"

// Accel picks QEMU's accelerator: want (AccelAuto or "" for Probe's
// verdict, or AccelKVM or AccelTCG to force one).
func Accel(want string) (string, error) {
	switch want {
	case "", AccelAuto:
		if Probe().Usable {
			return AccelKVM, nil
		}
		return AccelTCG, nil
	case AccelKVM, AccelTCG:
		return want, nil
	}
	return "", fmt.Errorf("%s=%q: use auto, kvm or tcg", AccelEnv, want)
}
