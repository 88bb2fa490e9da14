package cli

import (
	"github.com/spf13/pflag"

	"github.com/fcvm/fcvm/internal/channel"
)

// addShapeFlags adds podman's flags that shape the container itself; the
// guest applies them to the container's spec.
func addShapeFlags(f *pflag.FlagSet, s *channel.Shape) {
	f.StringArrayVar(&s.CapAdd, "cap-add", nil, "add a capability (ALL for all)")
	f.StringArrayVar(&s.CapDrop, "cap-drop", nil, "drop a capability (ALL for all)")
	f.BoolVar(&s.Privileged, "privileged", false, "all capabilities, no seccomp filter, no masked paths, /sys writable")
	f.BoolVar(&s.ReadOnly, "read-only", false, "mount the container's root read-only (with tmpfs on /run, /tmp and /var/tmp)")
	f.StringArrayVar(&s.Tmpfs, "tmpfs", nil, "mount a tmpfs: CONTAINER-DIR[:OPTIONS]")
	f.StringArrayVar(&s.Ulimits, "ulimit", nil, "set a resource limit: NAME=SOFT[:HARD]")
	f.BoolVar(&s.Init, "init", false, "run an init (catatonit) as the container's PID 1 that forwards signals and reaps")
	f.StringArrayVar(&s.AddHosts, "add-host", nil, "add HOST:IP to the container's /etc/hosts")
	f.StringArrayVar(&s.DNS, "dns", nil, "nameserver for the container's resolv.conf")
	f.StringArrayVar(&s.DNSSearch, "dns-search", nil, "search domain for the container's resolv.conf (. for none)")
	f.StringArrayVar(&s.DNSOptions, "dns-option", nil, "option for the container's resolv.conf (e.g. ndots:5)")
}
