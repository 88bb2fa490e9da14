package agent

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// seccompProfile is the guest's podman profile: the same file podman read
// when it started the container, so the filter stays podman's as the
// rootfs's containers-common package ships it. Converting it here costs a
// millisecond; linking containers/common's copy would need cgo
// (libseccomp) for the conversion.
const seccompProfile = "/usr/share/containers/seccomp.json"

// seccompFile is the profile's format (containers/common pkg/seccomp):
// rules carry conditions on the architecture, the container's
// capabilities and the kernel version, resolved for one container.
type seccompFile struct {
	DefaultAction   specs.LinuxSeccompAction `json:"defaultAction"`
	DefaultErrnoRet *uint                    `json:"defaultErrnoRet,omitempty"`
	Architectures   []specs.Arch             `json:"architectures,omitempty"`
	ArchMap         []struct {
		Arch      specs.Arch   `json:"architecture"`
		SubArches []specs.Arch `json:"subArchitectures"`
	} `json:"archMap,omitempty"`
	Syscalls []struct {
		Name     string                   `json:"name,omitempty"`
		Names    []string                 `json:"names,omitempty"`
		Action   specs.LinuxSeccompAction `json:"action"`
		ErrnoRet *uint                    `json:"errnoRet,omitempty"`
		Args     []specs.LinuxSeccompArg  `json:"args,omitempty"`
		Includes seccompFilter            `json:"includes"`
		Excludes seccompFilter            `json:"excludes"`
	} `json:"syscalls"`
}

type seccompFilter struct {
	Arches    []string `json:"arches,omitempty"`
	Caps      []string `json:"caps,omitempty"`
	MinKernel string   `json:"minKernel,omitempty"`
}

// seccompArch maps Go's architecture names, which the profile's
// conditions use, to libseccomp's.
var seccompArch = map[string]specs.Arch{
	"amd64": specs.ArchX86_64,
	"arm64": specs.ArchAARCH64,
}

// convertSeccomp resolves profile for a container with the bounding
// capabilities caps on architecture arch (Go's name) and kernel release
// kernel, as podman does (containers/common setupSeccomp).
func convertSeccomp(profile []byte, caps []string, arch, kernel string) (*specs.LinuxSeccomp, error) {
	var f seccompFile
	if err := json.Unmarshal(profile, &f); err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	if len(f.Architectures) > 0 && len(f.ArchMap) > 0 {
		return nil, fmt.Errorf("seccomp profile: both architectures and archMap")
	}
	out := &specs.LinuxSeccomp{
		DefaultAction:   f.DefaultAction,
		DefaultErrnoRet: f.DefaultErrnoRet,
		Architectures:   f.Architectures,
	}
	for _, a := range f.ArchMap {
		if want, ok := seccompArch[arch]; ok && a.Arch == want {
			out.Architectures = append(append(out.Architectures, a.Arch), a.SubArches...)
			break
		}
	}
	has := func(c string) bool { return slices.Contains(caps, c) }
	for _, call := range f.Syscalls {
		ex, in := call.Excludes, call.Includes
		if slices.Contains(ex.Arches, arch) || slices.ContainsFunc(ex.Caps, has) ||
			(ex.MinKernel != "" && kernelAtLeast(kernel, ex.MinKernel)) {
			continue
		}
		if (len(in.Arches) > 0 && !slices.Contains(in.Arches, arch)) ||
			slices.ContainsFunc(in.Caps, func(c string) bool { return !has(c) }) ||
			(in.MinKernel != "" && !kernelAtLeast(kernel, in.MinKernel)) {
			continue
		}
		names := call.Names
		if call.Name != "" {
			if len(names) > 0 {
				return nil, fmt.Errorf("seccomp profile: a rule has both name and names")
			}
			names = []string{call.Name}
		}
		if len(names) == 0 {
			continue
		}
		out.Syscalls = append(out.Syscalls, specs.LinuxSyscall{Names: names, Action: call.Action, ErrnoRet: call.ErrnoRet, Args: call.Args})
	}
	return out, nil
}

// kernelAtLeast compares kernel releases by their leading numbers
// ("6.1.0-50-amd64" against "4.8").
func kernelAtLeast(release, min string) bool {
	nums := func(s string) []int {
		var out []int
		for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '+' }) {
			n, err := strconv.Atoi(f)
			if err != nil {
				break
			}
			out = append(out, n)
		}
		return out
	}
	return slices.Compare(nums(release), nums(min)) >= 0
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
