package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/firecracker"
	"github.com/fcvm/fcvm/internal/kvm"
	"github.com/fcvm/fcvm/internal/qemu"
	"github.com/fcvm/fcvm/internal/vmm"
)

// This file is the only one in the supervisor that knows the drivers by
// name: everything else goes through the vmm interfaces.

// driverNames are the --vmm values besides auto.
var driverNames = []string{"qemu", "firecracker"}

// validDriver checks a --vmm value.
func validDriver(name string) error {
	if name == "auto" || slices.Contains(driverNames, name) {
		return nil
	}
	return fmt.Errorf("--vmm %q: must be auto, %s", name, strings.Join(driverNames, " or "))
}

// Driver picks the VMM driver for name: auto means firecracker where it
// can run (KVM and the binary), else qemu.
func Driver(name string, dirs datadir.Dirs, log *slog.Logger) (vmm.Driver, error) {
	q := &qemu.Driver{Accel: os.Getenv(kvm.AccelEnv)}
	fc := func() *firecracker.Driver { return firecracker.New(firecracker.Options{DataDir: dirs.Data, Log: log}) }
	switch name {
	case "qemu":
		return q, q.Available()
	case "firecracker":
		d := fc()
		if err := d.Available(); err != nil {
			return nil, oneLine(err)
		}
		return d, nil
	case "auto", "":
		// Without a usable KVM Firecracker cannot run, whatever else is
		// installed: a cheap first check.
		if kvm.Probe().Usable {
			if d := fc(); d.Available() == nil {
				return d, nil
			}
		}
		return q, q.Available()
	default:
		return nil, validDriver(name)
	}
}

// oneLine turns Firecracker's list of missing pieces into the one-line
// error a user gets at the prompt; `fcvm doctor` shows each fix.
func oneLine(err error) error {
	var ue *firecracker.UnavailableError
	if !errors.As(err, &ue) {
		return fmt.Errorf("--vmm firecracker: %w", err)
	}
	var what []string
	for _, p := range ue.Problems {
		what = append(what, p.What)
	}
	return &summaryError{
		msg: fmt.Sprintf("--vmm firecracker: %s: use --vmm qemu, or see `fcvm doctor` for how to fix it", strings.Join(what, "; ")),
		err: ue,
	}
}

// summaryError is a short message for an error whose own text is long.
type summaryError struct {
	msg string
	err error
}

func (e *summaryError) Error() string { return e.msg }
func (e *summaryError) Unwrap() error { return e.err }
