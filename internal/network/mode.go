package network

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Spec is a parsed --network value.
type Spec struct {
	// Mode is ModeRootless, ModeBridged or ModeNone.
	Mode string
	// UserNet is the rootless helper asked for: "pasta", "slirp4netns",
	// or "" for pasta when installed, else slirp4netns.
	UserNet string
	// HostLoopback opens the host's loopback to a rootless guest, at
	// HostLoopbackIP (see Config.HostLoopback).
	HostLoopback bool
	// NetNS is the namespace a ModeNS VM joins: an absolute path.
	NetNS string
}

// ParseMode parses a --network value: rootless, bridged, none or ns:PATH, or, in
// podman's spelling, pasta[:OPTIONS] or slirp4netns[:OPTIONS] for
// rootless with that helper. The only options are the ones that open the
// host's loopback to the guest: pasta:--map-gw and
// slirp4netns:allow_host_loopback=true. ns:PATH joins the network
// namespace at PATH (see ModeNS). Errors are one line, for the user.
func ParseMode(s string) (Spec, error) {
	name, opts, hasOpts := strings.Cut(s, ":")
	bad := func(why string) (Spec, error) {
		return Spec{}, fmt.Errorf("--network %q: %s", s, why)
	}
	var sp Spec
	switch name {
	case ModeRootless, ModeBridged, ModeNone:
		if hasOpts {
			return bad(fmt.Sprintf("%s takes no options (pasta:--map-gw and slirp4netns:allow_host_loopback=true are rootless with options)", name))
		}
		return Spec{Mode: name}, nil
	case ModeNS:
		if !filepath.IsAbs(opts) || filepath.Clean(opts) != opts {
			return bad("ns takes the absolute, clean path of a network namespace, as ns:/run/netns/NAME")
		}
		return Spec{Mode: ModeNS, NetNS: opts}, nil
	case "pasta", "slirp4netns":
		sp = Spec{Mode: ModeRootless, UserNet: name}
	default:
		return bad("must be rootless, bridged, none or ns:PATH (or pasta[:--map-gw] or slirp4netns[:allow_host_loopback=true] for rootless with that helper)")
	}
	if !hasOpts {
		return sp, nil
	}
	for _, o := range strings.Split(opts, ",") {
		switch {
		case name == "pasta" && o == "--map-gw":
			sp.HostLoopback = true
		case name == "pasta" && o == "--no-map-gw":
			sp.HostLoopback = false
		case name == "slirp4netns" && (o == "allow_host_loopback=true" || o == "allow_host_loopback=false"):
			sp.HostLoopback = o == "allow_host_loopback=true"
		case name == "pasta":
			return bad(fmt.Sprintf("unknown pasta option %q: fcvm knows --map-gw and --no-map-gw", o))
		default:
			return bad(fmt.Sprintf("unknown slirp4netns option %q: fcvm knows allow_host_loopback=true|false", o))
		}
	}
	return sp, nil
}
