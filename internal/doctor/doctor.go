// Package doctor finds out what this host can do for fcvm: which VMMs can
// run (KVM, the firecracker binary, QEMU), whether clones can use
// userfaultfd and reflinks, which network helpers exist, whether FUSE and
// nftables work, whether we are root, and whether the guest artifacts are
// built. Each finding that is missing comes with the command that fixes
// it, or the flag that works around it.
//
// Checks only look: they open devices, run `--version`, make a temp file
// in the data dir (for the reflink test) and remove it, and never change
// the host. A check that cannot decide says so in its Detail and reports
// OK false.
package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/fcvm/fcvm/internal/artifacts"
)

// Check is one finding. The JSON form is stable: fcvm doctor --json
// prints {"checks": [Check...]}.
type Check struct {
	// Name is short and stable: "kvm", "firecracker", "qemu", ...
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail says what was found (a version, a path, an error).
	Detail string `json:"detail"`
	// Fix is the command or flag that fixes a missing piece; "" when OK.
	Fix string `json:"fix,omitempty"`
	// NeededFor says what fcvm uses it for.
	NeededFor string `json:"needed_for"`
}

// Report is every check, in a fixed order.
type Report struct {
	Checks []Check `json:"checks"`
}

// Get returns the named check.
func (r Report) Get(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// Options say where fcvm keeps its data.
type Options struct {
	DataDir string
	Log     *slog.Logger
}

// Run performs every check.
func Run(ctx context.Context, o Options) Report {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	checks := []func(context.Context, Options) Check{
		checkRoot, checkKVM, checkFirecracker, checkQEMU, checkUserfaultfd,
		checkReflink, checkRootlessNet, checkNftables, checkFUSE, checkSetupTools,
		checkArtifacts,
	}
	var r Report
	for _, f := range checks {
		c := f(ctx, o)
		if c.OK {
			c.Fix = ""
		}
		o.Log.Debug("doctor", "check", c.Name, "ok", c.OK, "detail", c.Detail)
		r.Checks = append(r.Checks, c)
	}
	return r
}

func checkRoot(context.Context, Options) Check {
	c := Check{Name: "root", NeededFor: "fcvm setup (debootstrap), --network bridged"}
	if uid := os.Geteuid(); uid == 0 {
		c.OK, c.Detail = true, "running as root"
	} else {
		c.Detail = fmt.Sprintf("running as uid %d", uid)
		c.Fix = "run fcvm setup and bridged VMs with sudo; rootless VMs need no root"
	}
	return c
}

// qemuBinary is the system emulator for the host's architecture.
func qemuBinary() string {
	switch runtime.GOARCH {
	case "arm64":
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

func checkFirecracker(ctx context.Context, o Options) Check {
	c := Check{Name: "firecracker", NeededFor: "--vmm firecracker (with KVM)"}
	path, err := exec.LookPath("firecracker")
	if err != nil {
		local := filepath.Join(o.DataDir, "bin", "firecracker")
		if _, serr := os.Stat(local); serr != nil {
			c.Detail = "not in PATH nor at " + local
			c.Fix = firecrackerFix
			return c
		}
		path = local
	}
	v, err := version(ctx, path, "--version")
	if err != nil {
		c.Detail = fmt.Sprintf("%s: %v", path, err)
		c.Fix = firecrackerFix
		return c
	}
	c.OK, c.Detail = true, fmt.Sprintf("%s (%s)", v, path)
	return c
}

// firecrackerFix is how to get the firecracker binary.
const firecrackerFix = "fcvm setup firecracker --download (or --from PATH); without it use --vmm qemu"

func checkQEMU(ctx context.Context, _ Options) Check {
	bin := qemuBinary()
	c := Check{Name: "qemu", NeededFor: "--vmm qemu (and --vmm auto without firecracker)"}
	fix := "apt-get install qemu-system-x86"
	if runtime.GOARCH == "arm64" {
		fix = "apt-get install qemu-system-arm"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		c.Detail, c.Fix = bin+" not in PATH", fix
		return c
	}
	v, err := version(ctx, path, "--version")
	if err != nil {
		c.Detail, c.Fix = fmt.Sprintf("%s: %v", path, err), fix
		return c
	}
	c.OK, c.Detail = true, fmt.Sprintf("%s (%s)", v, path)
	return c
}

func checkRootlessNet(ctx context.Context, _ Options) Check {
	c := Check{Name: "rootless-network", NeededFor: "--network rootless (the default)"}
	var found []string
	for _, bin := range []string{"pasta", "slirp4netns"} {
		path, err := exec.LookPath(bin)
		if err != nil {
			continue
		}
		v, err := version(ctx, path, "--version")
		if err != nil || !strings.ContainsAny(v, "0123456789") {
			v = "version unknown" // pasta from Debian 12 prints no number
		}
		found = append(found, fmt.Sprintf("%s (%s)", path, v))
	}
	if len(found) == 0 {
		c.Detail = "neither pasta nor slirp4netns is in PATH"
		c.Fix = "apt-get install passt (or slirp4netns); or use --network none"
		return c
	}
	// What the default network exposes, so that nobody has to read the
	// source to learn it.
	c.OK, c.Detail = true, strings.Join(found, "; ")+"; guests do not reach the host's loopback (127.0.0.1) unless run with --network pasta:--map-gw or slirp4netns:allow_host_loopback=true"
	return c
}

var setupTools = []struct{ bin, pkg string }{
	{"apt-get", "apt"}, {"dpkg-deb", "dpkg"}, {"debootstrap", "debootstrap"}, {"mkfs.ext4", "e2fsprogs"},
}

func checkSetupTools(context.Context, Options) Check {
	c := Check{Name: "setup-tools", NeededFor: "fcvm setup"}
	var missing, pkgs []string
	for _, t := range setupTools {
		if _, err := exec.LookPath(t.bin); err != nil {
			missing = append(missing, t.bin)
			pkgs = append(pkgs, t.pkg)
		}
	}
	const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
	if _, err := os.Stat(keyring); err != nil {
		missing = append(missing, keyring)
		pkgs = append(pkgs, "debian-archive-keyring")
	}
	if len(missing) > 0 {
		c.Detail = "missing: " + strings.Join(missing, ", ")
		c.Fix = "apt-get install " + strings.Join(pkgs, " ")
		return c
	}
	c.OK, c.Detail = true, "apt-get, dpkg-deb, debootstrap, mkfs.ext4, Debian archive keyring"
	return c
}

func checkArtifacts(_ context.Context, o Options) Check {
	c := Check{Name: "guest-artifacts", NeededFor: "every VM"}
	set, err := artifacts.Load(o.DataDir)
	if err != nil {
		c.Detail, c.Fix = err.Error(), "fcvm setup"
		if !errors.Is(err, artifacts.ErrNotSetUp) {
			c.Fix = "fcvm setup --force"
		}
		return c
	}
	c.OK = true
	c.Detail = fmt.Sprintf("kernel %s, rootfs %s", set.KernelVersion, short(set.RootfsDigest))
	return c
}

func short(d string) string {
	if len(d) > 8 {
		return d[:8]
	}
	return d
}

// version runs bin with arg and returns the first line it prints.
func version(ctx context.Context, bin string, arg string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, arg).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", filepath.Base(bin), arg, err)
	}
	line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n"))
	return string(line), nil
}

// existingDir returns dir or its nearest existing ancestor: the
// filesystem the data dir is, or will be, on.
func existingDir(dir string) string {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
		if d == filepath.Dir(d) {
			return d
		}
	}
}
