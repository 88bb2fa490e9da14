package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/fcvm/fcvm/internal/kvm"
	"github.com/fcvm/fcvm/internal/vmm"
)

// MinVersion is the oldest Firecracker the driver boots.
var MinVersion = [3]int{1, 10, 0}

// Problem is one reason the driver cannot run, and its fix.
type Problem struct {
	What, Fix string
}

// UnavailableError lists everything missing on this host. It wraps
// vmm.ErrUnavailable.
type UnavailableError struct {
	Problems []Problem
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	b.WriteString("firecracker cannot run here:")
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  - %s: %s", p.What, p.Fix)
	}
	b.WriteString("\n  or use --vmm qemu, which runs without KVM (slower)")
	return b.String()
}

func (e *UnavailableError) Unwrap() error { return vmm.ErrUnavailable }

// Available checks /dev/kvm, the firecracker binary and its version, and
// the jailer when one is configured. It reports every problem at once.
func (d *Driver) Available() error {
	var probs []Problem
	add := func(what, fix string) { probs = append(probs, Problem{what, fix}) }

	kvmDev := d.opts.KVMDevice
	if kvmDev == "" {
		// The host's own KVM: usable means hardware-assisted, not merely
		// a /dev/kvm that opens (a PVM sandbox has one).
		if st := kvm.Probe(); !st.Usable {
			add(st.Detail, st.Fix)
		}
	} else if f, err := os.OpenFile(kvmDev, os.O_RDWR, 0); err == nil {
		f.Close()
	} else if errors.Is(err, os.ErrNotExist) {
		add("no "+kvmDev, "this host has no KVM; enable virtualization in the firmware (or nested virtualization for a cloud VM) and load kvm_intel or kvm_amd (modprobe kvm_intel)")
	} else if errors.Is(err, os.ErrPermission) {
		add("no permission on "+kvmDev, "add your user to its group (sudo usermod -aG kvm $USER, then log in again) or run as root")
	} else {
		add("cannot open "+kvmDev+": "+err.Error(), "check that the kvm module is loaded (lsmod | grep kvm)")
	}

	installed := "<data dir>/bin/firecracker"
	if d.opts.DataDir != "" {
		installed = d.opts.DataDir + "/bin/firecracker"
	}
	bin := d.binaryPath()
	if _, err := exec.LookPath(bin); err != nil {
		add("no firecracker binary on PATH or at "+installed,
			fmt.Sprintf("download a release (%d.%d or newer) from https://github.com/firecracker-microvm/firecracker/releases and run `fcvm setup firecracker --from PATH/TO/firecracker`, or `fcvm setup firecracker --download` on a host with internet", MinVersion[0], MinVersion[1]))
	} else if v, err := BinaryVersion(bin); err != nil {
		add(bin+" does not run", err.Error()+"; reinstall it with `fcvm setup firecracker --from PATH`")
	} else if older(v, MinVersion) {
		add(fmt.Sprintf("%s is version %d.%d.%d, too old", bin, v[0], v[1], v[2]),
			fmt.Sprintf("fcvm needs %d.%d or newer: install a newer release with `fcvm setup firecracker --from PATH`", MinVersion[0], MinVersion[1]))
	}

	if d.opts.Jailer != nil {
		j := d.jailerPath()
		if _, err := exec.LookPath(j); err != nil {
			add("jailer requested but no jailer binary at "+j,
				"it ships in the same release tarball as firecracker: `fcvm setup firecracker --from PATH --jailer PATH/TO/jailer`")
		} else if _, err := JailerVersion(j); err != nil {
			add(j+" is not a working jailer", err.Error()+"; install the one from firecracker's release tarball with `fcvm setup firecracker --from PATH --jailer PATH`")
		}
	}
	if len(probs) > 0 {
		return &UnavailableError{Problems: probs}
	}
	return nil
}

// BinaryVersion runs `bin --version` and parses its first line
// ("Firecracker v1.12.1").
func BinaryVersion(bin string) ([3]int, error) { return binaryVersion(bin, "firecracker") }

// JailerVersion runs `bin --version` on a jailer ("Jailer v1.12.1").
func JailerVersion(bin string) ([3]int, error) { return binaryVersion(bin, "jailer") }

func binaryVersion(bin, product string) ([3]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return [3]int{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	_, ver, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(strings.ToLower(line), product) {
		return [3]int{}, fmt.Errorf("%s --version: %q is not %s's answer", bin, line, product)
	}
	return ParseVersion(ver)
}

// ParseVersion parses "v1.12.1", "1.12.1" or "1.17.0-dev".
func ParseVersion(s string) ([3]int, error) {
	var v [3]int
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	s, _, _ = strings.Cut(s, "-")
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return v, fmt.Errorf("parse version %q: want MAJOR.MINOR[.PATCH]", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("parse version %q: bad number %q", s, p)
		}
		v[i] = n
	}
	return v, nil
}

func older(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
