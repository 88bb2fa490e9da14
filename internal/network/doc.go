// Package network gives each fcvm VM its network, the way podman gives one
// to a container: rootless (the default, no privileges), bridged (root) or
// none, with -p port publishing. The supervisor calls [Setup] before it
// starts the VMM, starts the VMM with [Network.StartProcess], stores the
// returned [Network] in the VM's record, and calls [Network.Teardown] when
// the VM stops; fcvm gc calls [Reclaim] with the stored Network after a
// supervisor died.
//
// # Addressing plan
//
// The guest side is the same in every VM, inside the VM's own network
// namespace, so a snapshot restores unchanged as many clones: a TAP named
// [TAPName] ("tap0") holding the gateway [GatewayIP] 172.30.0.1/30, the
// guest at [GuestIP] 172.30.0.2/30 with MAC [GuestMAC] 02:fc:00:00:00:02,
// and the guest's DNS server at the gateway address, where a small
// forwarder relays queries to the upstream resolvers ([Config.DNS], default
// the host's /etc/resolv.conf; loopback resolvers work). The guest agent
// configures all of this statically.
//
// What differs per VM lives on the host side:
//
//   - bridged: a named netns /run/netns/fcvm-<id8>, a veth pair
//     fcvm<id8> (host, 10.66.N.1/30) to veth0 (namespace, 10.66.N.2/30),
//     one /30 per VM from [DefaultPool] 10.66.0.0/16 (16384 VMs). In the
//     namespace, traffic from the host side 10.66.N.1 to 10.66.N.2 is NATed
//     one to one to the guest ([Network.HostIP]: the host reaches every
//     guest port there, as podman's container IP), published guest ports
//     from any source too, and guest egress is masqueraded out of veth0. On
//     the host, the nftables table "ip fcvm-<id8>" DNATs published ports
//     (prerouting and output) to 10.66.N.2, masquerades the VM's /30 (and
//     the guest's own published ports reached from the guest), and filters
//     (see Isolation); removing the table removes exactly that VM's rules.
//   - rootless: a user+net namespace held by a holder process (fcvm
//     re-executed, see [MaybeRunHolder]); pasta (or slirp4netns) attaches
//     an uplink uplink0 10.0.2.100/24 to it and binds the published host
//     ports, which arrive in the namespace on ports 20000+i and are proxied
//     to the guest by the holder. The holder passes the guest's DNS socket
//     (made in the namespace) to the caller, whose forwarder reaches the
//     upstreams as the caller does. The guest reaches the host's loopback
//     at [HostLoopbackIP] 10.0.2.2 only if [Config.HostLoopback] (--network
//     pasta:--map-gw or slirp4netns:allow_host_loopback=true, see
//     [ParseMode]).
//
// # Isolation
//
// The guest is hostile. In every mode, the VM namespace's table "ip fcvm"
// drops what comes from the TAP with a source other than [GuestIP]
// (before conntrack; rp_filter=1 on the TAP too), and of the namespace
// itself the guest reaches only the DNS forwarder and replies.
//
// Rootless: pasta runs with --no-map-gw and slirp4netns with
// --disable-host-loopback (except when a UDP port is published: libslirp
// refuses the replies to loopback clients otherwise), and the namespace
// rejects the guest's packets to 10.0.2.2 in any case, so the host's
// loopback is closed unless opened. What pasta or slirp4netns reach for the
// guest, it reaches: the host's other addresses and the world.
//
// Bridged, on the host, every rule keyed on the VM's link: a packet from
// the link must have source 10.66.N.2 (a raw-priority guard chain, and
// rp_filter=1 on the link, which a host conf/all/rp_filter=2 would make
// loose); the host's input takes only replies from the link (no host
// service on any address is open to guests; the DNS forwarder is in the
// VM's namespace); the host forwards to the link only published ports and
// replies, and nothing between two VM links (names "fcvm*", whatever pool
// or data dir they are from, so neither directly nor through another VM's
// published port). The chains have policy accept and drop only traffic of
// the VM's own link: the host's other traffic is never touched (and a drop
// policy in another table still applies to fcvm's traffic too).
//
// The DNS forwarder bounds what a guest may cost: fixed goroutines, one
// socket per upstream with random IDs of its own, at most 256 queries in
// flight, 100 new queries a second (burst 100).
//
// # Host settings
//
// Rootless mode changes nothing on the host; its sysctls (ip_forward,
// route_localnet) are the VM namespace's own. Bridged mode needs the
// host's net.ipv4.ip_forward for guest egress and for published ports
// reached from other machines: if it is off, fcvm turns it on, records that
// in DATADIR/network/ip_forward.fcvm, and, as docker and podman, never turns
// it off again (something else may rely on it by then). Nothing else
// host-wide is touched; in
// particular not route_localnet: published ports on the host's loopback
// are served by a userspace TCP/UDP proxy in the supervisor (which also
// holds every published port, so nothing else can take it while the VM
// runs). Traffic from other machines is DNATed and keeps its source
// address. The per-link rp_filter goes with the link.
//
// # Concurrency and crashes
//
// Address blocks are leases: files in DATADIR/network/leases named by the
// block, created under a flock, naming the owning process by PID and start
// time. A lease whose owner is dead is reused only when no never-used block
// is left, after its leftovers (netns, link, table) are removed. Helper
// processes are started with a parent-death signal (and the holder also
// exits when its lifeline pipe closes), so SIGKILL of the supervisor takes
// them down; Reclaim kills any survivor only if its PID still has the
// recorded start time.
//
// # Errors
//
// Setup is a transaction: on error everything it made is removed. Errors
// callers branch on: [ErrPortInUse] (a [*PortInUseError] naming the holder
// when /proc tells), [ErrPoolExhausted], [ErrNeedRoot], [ErrNoUserNet].
// Teardown and Reclaim are idempotent and treat "already gone" as success.
//
// # Limits
//
// IPv4 only. Rootless published ports reach the guest from the host's
// address as the source (pasta's and slirp4netns's NAT); bridged ones keep
// the client's address except for loopback clients (the proxy's address).
package network
