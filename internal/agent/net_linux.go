package agent

import (
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"

	"github.com/fcvm/fcvm/internal/channel"
)

func setupLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	return netlink.LinkSetUp(lo)
}

// announce makes the network notice a restored guest. Placeholder for the
// gratuitous ARP of the networking work: bringing the link down and up
// makes the kernel send one.
func announce(log *slog.Logger, n *channel.NetPlan) {
	links, err := netlink.LinkList()
	if err != nil {
		return
	}
	for _, l := range links {
		if l.Attrs().HardwareAddr.String() == n.MAC {
			netlink.LinkSetDown(l)
			if err := netlink.LinkSetUp(l); err != nil {
				log.Warn("re-announce network", "err", err)
			}
		}
	}
}
