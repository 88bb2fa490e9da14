package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fcvm/fcvm/internal/state"
)

// parseVolumes checks -v/--volume flags the way podman reads them and
// resolves each host directory to an absolute path. It runs before
// anything is made, so bad input leaves nothing behind.
func parseVolumes(specs []string) ([]state.Volume, error) {
	var vols []state.Volume
	seen := map[string]string{}
	for _, spec := range specs {
		v, err := parseVolume(spec)
		if err != nil {
			return nil, err
		}
		if prev, ok := seen[v.Guest]; ok {
			return nil, fmt.Errorf("-v %q: %s is already a volume (-v %q): give each container path once", spec, v.Guest, prev)
		}
		seen[v.Guest] = spec
		vols = append(vols, v)
	}
	return vols, nil
}

// parseVolume reads one HOST:GUEST[:OPTIONS] flag. OPTIONS are podman's
// comma-separated list; ro and rw choose the mode, z and Z (SELinux
// relabelling) are accepted and ignored because the guest has no SELinux,
// and anything else is refused rather than silently dropped.
func parseVolume(spec string) (state.Volume, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return state.Volume{}, fmt.Errorf("-v %q: want HOST-DIR:CONTAINER-DIR[:ro]", spec)
	}
	host, guest := parts[0], parts[1]
	v := state.Volume{}
	if len(parts) == 3 {
		ro, err := volumeOptions(parts[2])
		if err != nil {
			return state.Volume{}, fmt.Errorf("-v %q: %w", spec, err)
		}
		v.ReadOnly = ro
	}
	if host == "" {
		return state.Volume{}, fmt.Errorf("-v %q: no host directory: want HOST-DIR:CONTAINER-DIR", spec)
	}
	// podman reads a source that is not a path as a named volume; fcvm
	// shares host directories only, so say so rather than look for a
	// directory of that name here.
	if !strings.HasPrefix(host, "/") && !strings.HasPrefix(host, ".") {
		return state.Volume{}, fmt.Errorf("-v %q: named volumes are not supported: give a host directory as an absolute path or starting with ./", spec)
	}
	if guest == "" || !filepath.IsAbs(guest) {
		return state.Volume{}, fmt.Errorf("-v %q: container path %q is not absolute: give it starting with /", spec, guest)
	}
	v.Guest = filepath.Clean(guest)
	if v.Guest == "/" {
		return state.Volume{}, fmt.Errorf("-v %q: a volume cannot replace the container's root: choose a directory below /", spec)
	}
	abs, err := filepath.Abs(host)
	if err != nil {
		return state.Volume{}, fmt.Errorf("-v %q: resolve %s: %w", spec, host, err)
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return state.Volume{}, fmt.Errorf("-v %q: host directory %s does not exist: create it or fix the path", spec, abs)
	case err != nil:
		return state.Volume{}, fmt.Errorf("-v %q: %w", spec, err)
	case !st.IsDir():
		return state.Volume{}, fmt.Errorf("-v %q: %s is not a directory: fcvm volumes share directories only", spec, abs)
	}
	v.Host = abs
	return v, nil
}

// volumeOptions reads podman's option list and reports read-only.
func volumeOptions(list string) (readOnly bool, err error) {
	var mode string
	for _, o := range strings.Split(list, ",") {
		switch o {
		case "ro", "rw":
			if mode != "" && mode != o {
				return false, fmt.Errorf("options %s and %s conflict: give one", mode, o)
			}
			mode = o
		case "z", "Z":
			// SELinux relabelling: nothing to relabel in the guest.
		case "":
			return false, fmt.Errorf("empty option in %q: options are ro, rw, z, Z", list)
		default:
			return false, fmt.Errorf("option %q is not supported: options are ro, rw, z, Z", o)
		}
	}
	return mode == "ro", nil
}

// parseMount turns a --mount flag into the -v or --tmpfs flag it means
// (podman's key=value list: type, source|src, target|destination|dst,
// ro|readonly[=true|false], relabel, bind-propagation, tmpfs-size,
// tmpfs-mode). Other types are refused: a VM shares host directories and
// makes tmpfs, nothing else.
func parseMount(spec string) (volume, tmpfs string, err error) {
	var typ, src, dst string
	var tmpfsOpts []string
	ro := false
	for _, kv := range strings.Split(spec, ",") {
		k, v, hasV := strings.Cut(kv, "=")
		switch k {
		case "type":
			typ = v
		case "source", "src":
			src = v
		case "target", "destination", "dst":
			dst = v
		case "ro", "readonly":
			switch {
			case !hasV || v == "true":
				ro = true
			case v == "false":
				ro = false
			default:
				return "", "", fmt.Errorf("--mount %q: %s=%s: want true or false", spec, k, v)
			}
		case "tmpfs-size", "tmpfs-mode":
			tmpfsOpts = append(tmpfsOpts, strings.TrimPrefix(k, "tmpfs-")+"="+v)
		case "relabel", "bind-propagation":
			// SELinux and propagation: nothing to do in the guest.
		default:
			return "", "", fmt.Errorf("--mount %q: option %q is not supported: use type, source, target, ro (tmpfs-size, tmpfs-mode)", spec, k)
		}
	}
	switch {
	case typ == "tmpfs" && dst != "" && src == "":
		if ro {
			tmpfsOpts = append(tmpfsOpts, "ro")
		}
		if len(tmpfsOpts) > 0 {
			dst += ":" + strings.Join(tmpfsOpts, ",")
		}
		return "", dst, nil
	case typ == "tmpfs":
		return "", "", fmt.Errorf("--mount %q: want type=tmpfs,target=CONTAINER-DIR[,tmpfs-size=N]", spec)
	case typ != "bind":
		return "", "", fmt.Errorf("--mount %q: type %q is not supported: fcvm shares host directories (type=bind, as -v) and makes tmpfs (type=tmpfs, as --tmpfs)", spec, typ)
	case src == "" || dst == "" || len(tmpfsOpts) > 0:
		return "", "", fmt.Errorf("--mount %q: want type=bind,source=HOST-DIR,target=CONTAINER-DIR[,ro]", spec)
	}
	volume = src + ":" + dst
	if ro {
		volume += ":ro"
	}
	return volume, "", nil
}
