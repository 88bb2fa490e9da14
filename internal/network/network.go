package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/fcvm/fcvm/internal/state"
)

// The guest side of every VM, identical in every VM's namespace so that a
// snapshot restores unchanged as many clones.
const (
	// TAPName is the TAP device the VMM attaches to.
	TAPName = "tap0"
	// GatewayIP sits on the TAP, in the VM's namespace; it is also the
	// guest's DNS server.
	GatewayIP = "172.30.0.1"
	// GuestIP is the guest's address.
	GuestIP = "172.30.0.2"
	// PrefixLen is the length of the guest's subnet (a /30).
	PrefixLen = 30
	// GuestMAC is the guest's MAC address.
	GuestMAC = "02:fc:00:00:00:02"
	// GuestCIDR is GuestIP/PrefixLen, as the guest agent configures it.
	GuestCIDR = "172.30.0.2/30"
)

// Rootless mode: the addresses of the namespace's uplink to pasta or
// slirp4netns, the same for both (slirp4netns's defaults).
const (
	uplinkName = "uplink0"
	uplinkIP   = "10.0.2.100"
	uplinkLen  = 24
	// HostLoopbackIP is where a rootless guest reaches the host's
	// loopback (127.0.0.1) when Config.HostLoopback opens it: pasta and
	// slirp4netns then map their gateway to it. Otherwise the VM's
	// namespace refuses the guest's packets to it.
	HostLoopbackIP = "10.0.2.2"
)

// DefaultPool is where bridged mode takes each VM's /30 from.
var DefaultPool = netip.MustParsePrefix("10.66.0.0/16")

// The modes, as --network spells them.
const (
	ModeRootless = "rootless"
	ModeBridged  = "bridged"
	ModeNone     = "none"
	// ModeNS joins a network namespace made by someone else (CNI, ip
	// netns): the VM takes over its one interface, address, MAC and
	// default route, as kata-containers does with tc redirects.
	ModeNS = "ns"
)

// Errors callers may branch on.
var (
	// ErrPortInUse: a published host port is taken. The error is a
	// *PortInUseError.
	ErrPortInUse = errors.New("network: port already in use")
	// ErrPoolExhausted: every address block of the bridged pool has a
	// live owner.
	ErrPoolExhausted = errors.New("network: no free address for another bridged VM")
	// ErrNeedRoot: bridged mode was asked for without root.
	ErrNeedRoot = errors.New("network: bridged mode needs root")
	// ErrNoUserNet: neither pasta nor slirp4netns is installed.
	ErrNoUserNet = errors.New("network: rootless mode needs pasta or slirp4netns")
)

// PortInUseError says which published port is taken and, when /proc tells,
// by whom.
type PortInUseError struct {
	Port Port
	// PID and Command of the holder; 0 and "" when unknown (e.g. another
	// user's process, or a port held by a kernel service).
	PID     int
	Command string
	Err     error
}

func (e *PortInUseError) Error() string {
	addr := e.Port.HostIP
	if addr == "" {
		addr = "0.0.0.0"
	}
	who := ""
	if e.PID > 0 {
		who = fmt.Sprintf(" by %s (pid %d)", e.Command, e.PID)
	}
	return fmt.Sprintf("publish %s: port %s:%d/%s is already in use%s: choose another host port or stop what holds it",
		e.Port, addr, e.Port.HostPort, e.Port.Proto, who)
}

func (e *PortInUseError) Unwrap() []error { return []error{ErrPortInUse, e.Err} }

// Config is what one VM's network is made from.
type Config struct {
	// Mode is the --network value (see ParseMode): rootless, bridged,
	// none or ns:PATH, or pasta[:OPTIONS] or slirp4netns[:OPTIONS].
	Mode string
	// ID is the VM's ID (at least 8 hex digits); host-side names derive
	// from its first 8.
	ID    string
	Ports []Port
	// DataDir holds the address leases (DataDir/network); it is the fcvm
	// data dir.
	DataDir string
	// RuntimeDir is the VM's private runtime dir (helper sockets and pid
	// files).
	RuntimeDir string
	// DNS lists upstream resolvers as IP or IP:port; nil means the
	// nameservers of /etc/resolv.conf. Loopback upstreams work in both
	// modes.
	DNS []string
	// Pool overrides DefaultPool (bridged); its length must be at most 30.
	Pool netip.Prefix
	// UserNet forces the rootless helper: "pasta", "slirp4netns" or ""
	// for pasta when installed, else slirp4netns.
	UserNet string
	// HostLoopback opens the host's loopback (every service on
	// 127.0.0.1) to a rootless guest at HostLoopbackIP, as podman's
	// pasta:--map-gw. Off, the guest reaches nothing on the host's
	// loopback (podman's default too).
	HostLoopback bool
	// JoinNetNS is the namespace mode ns joins (from ns:PATH).
	JoinNetNS string
	Log       *slog.Logger

	// guestVeth makes the guest-facing device a veth pair (TAPName with
	// its peer guestPeer) instead of a TAP, so that tests can put a real
	// network namespace where the guest would be. Test only.
	guestVeth bool
}

// guestPeer is the far end of the test-only guest veth.
const guestPeer = "guest0"

// Network is one VM's network as made by [Setup]. Its exported fields are
// JSON-serialisable: the supervisor stores them in the VM's record so that
// [Reclaim] can remove the network after the supervisor died.
type Network struct {
	Mode string `json:"mode"`
	ID   string `json:"id"`
	// NetNS is the path of the VM's network namespace, for setns(2);
	// "" in mode none.
	NetNS string `json:"netns,omitempty"`
	// UserNS is the path of the user namespace owning NetNS (rootless
	// mode), "" otherwise.
	UserNS string `json:"userns,omitempty"`
	// TAP, GuestIP, GatewayIP, GuestMAC and DNS are the guest's side; the
	// guest agent configures them statically. PrefixLen is the subnet.
	TAP       string   `json:"tap,omitempty"`
	GuestIP   string   `json:"guest_ip,omitempty"`
	GatewayIP string   `json:"gateway_ip,omitempty"`
	GuestMAC  string   `json:"guest_mac,omitempty"`
	PrefixLen int      `json:"prefix_len,omitempty"`
	DNS       []string `json:"dns,omitempty"`
	// MTU is the guest interface's, when not 1500 (mode ns: the joined
	// interface's).
	MTU int `json:"mtu,omitempty"`
	// HostIP is where the host reaches the guest on any port (bridged:
	// the namespace's veth address, NATed one to one to the guest); ""
	// in rootless mode, where only published ports reach it.
	HostIP string `json:"host_ip,omitempty"`
	// HostLoopbackIP is where the guest reaches the host's 127.0.0.1
	// (rootless with Config.HostLoopback); "" otherwise.
	HostLoopbackIP string `json:"host_loopback_ip,omitempty"`
	Ports          []Port `json:"ports,omitempty"`

	// What Reclaim needs.
	UserNet string        `json:"user_net,omitempty"` // pasta or slirp4netns
	Link    string        `json:"link,omitempty"`     // host side of the veth; ns: the joined interface
	Ingress bool          `json:"ingress,omitempty"`  // ns: Link's ingress qdisc is ours
	Table   string        `json:"table,omitempty"`    // host nftables table (family ip)
	Lease   string        `json:"lease,omitempty"`    // lease file
	Holder  state.Process `json:"holder,omitzero"`    // rootless namespace holder
	Helper  state.Process `json:"helper,omitzero"`    // pasta or slirp4netns

	log *slog.Logger
	// mu guards the fields below.
	mu       sync.Mutex
	live     *live // what only the process that made the network has
	tornDown bool
}

// validate checks what needs no I/O, and turns Mode into one of the three
// modes, with its options in UserNet and HostLoopback.
func (c *Config) validate() error {
	sp, err := ParseMode(c.Mode)
	if err != nil {
		return err
	}
	if sp.UserNet != "" && c.UserNet != "" && sp.UserNet != c.UserNet {
		return fmt.Errorf("--network %q: the configuration asks for %s", c.Mode, c.UserNet)
	}
	c.Mode, c.HostLoopback = sp.Mode, c.HostLoopback || sp.HostLoopback
	if sp.Mode == ModeNS {
		c.JoinNetNS = sp.NetNS
	}
	if sp.UserNet != "" {
		c.UserNet = sp.UserNet
	}
	if c.HostLoopback && c.Mode != ModeRootless {
		return fmt.Errorf("network %s: opening the host's loopback is a rootless option", c.Mode)
	}
	if len(c.ID) < 8 {
		return fmt.Errorf("network setup: VM id %q is shorter than 8 characters", c.ID)
	}
	for _, r := range c.ID[:8] {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return fmt.Errorf("network setup: VM id %q does not start with 8 lowercase hex digits", c.ID)
		}
	}
	if c.Mode == ModeNone && len(c.Ports) > 0 {
		return errors.New("-p with --network none: a VM without a network publishes nothing; use --network rootless or bridged")
	}
	if c.Mode == ModeNS && len(c.Ports) > 0 {
		return errors.New("-p with --network ns:PATH: the namespace's owner routes to its address; publish ports there, or use --network rootless or bridged")
	}
	if err := checkPorts(c.Ports); err != nil {
		return err
	}
	if c.Mode == ModeBridged && c.DataDir == "" {
		return errors.New("network setup: no data dir for address leases")
	}
	if c.Pool.IsValid() && (!c.Pool.Addr().Is4() || c.Pool.Bits() > 30) {
		return fmt.Errorf("network pool %s: must be an IPv4 prefix of at most /30", c.Pool)
	}
	for _, d := range c.DNS {
		if _, err := parseUpstream(d); err != nil {
			return err
		}
	}
	switch c.UserNet {
	case "", "pasta", "slirp4netns":
	default:
		return fmt.Errorf("user-mode network %q: must be pasta or slirp4netns", c.UserNet)
	}
	return nil
}

// parseUpstream turns "IP" or "IP:port" into an address with port 53 by
// default.
func parseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("dns server %q: not IP or IP:port", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 53), nil
}

// id8 is the part of the VM id host-side names carry.
func id8(id string) string { return id[:8] }

// LinkName is the host side of a bridged VM's veth pair.
func LinkName(id string) string { return linkPrefix + id8(id) }

// linkPrefix starts the name of every bridged VM's host link; the host
// forwards nothing between two links named so.
const linkPrefix = "fcvm"

// TableName is a bridged VM's host nftables table (family ip).
func TableName(id string) string { return "fcvm-" + id8(id) }

// NetNSName is a bridged VM's named network namespace (/run/netns/NAME).
func NetNSName(id string) string { return "fcvm-" + id8(id) }
