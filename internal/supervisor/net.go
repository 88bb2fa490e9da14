package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fcvm/fcvm/internal/atomicfile"
	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/network"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/vmm"
)

// networkFile holds, in the VM's dir, what Reclaim needs to remove the
// VM's network after its supervisor died.
const networkFile = "network.json"

// ParsePublish parses every -p flag.
func ParsePublish(specs []string) ([]network.Port, error) {
	var ports []network.Port
	for _, s := range specs {
		p, err := network.ParsePublish(s)
		if err != nil {
			return nil, err
		}
		ports = append(ports, p...)
	}
	return ports, nil
}

// setupNetwork makes the VM's network and wires it into the plan, the VMM
// config and the record. Two environment variables tune it:
//
//   - FCVM_DNS=IP[:PORT][,...] overrides the guest's upstream resolvers
//     (default: the host's /etc/resolv.conf); tests point it at their own
//     DNS server so that nothing leaves the machine.
//   - FCVM_BRIDGE_POOL=PREFIX (e.g. 10.66.0.0/16, at most /30) is where
//     bridged VMs take their /30 from: give each data dir on one host its
//     own pool, since leases are per data dir.
func (vm *VM) setupNetwork(ctx context.Context, dirs datadir.Dirs, mode string, ports []network.Port, cfg *vmm.Config) error {
	if mode == "" || mode == network.ModeNone {
		return nil
	}
	ncfg := network.Config{
		Mode:       mode,
		ID:         vm.Record.ID,
		Ports:      ports,
		DataDir:    dirs.Data,
		RuntimeDir: vm.Record.RuntimeDir,
		Log:        vm.log,
	}
	if d := os.Getenv("FCVM_DNS"); d != "" {
		ncfg.DNS = splitComma(d)
	}
	if p := os.Getenv("FCVM_BRIDGE_POOL"); p != "" && mode == network.ModeBridged {
		pool, err := netip.ParsePrefix(p)
		if err != nil {
			return fmt.Errorf("FCVM_BRIDGE_POOL=%s: not an address prefix such as 10.66.0.0/16", p)
		}
		ncfg.Pool = pool
	}
	n, err := network.Setup(ctx, ncfg)
	if err != nil {
		return err
	}
	vm.net = n
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(vm.Record.Dir, networkFile), b, 0o644); err != nil {
		return fmt.Errorf("save network state: %w", err)
	}
	vm.Plan.Network = &channel.NetPlan{
		Address: n.GuestIP + "/" + strconv.Itoa(n.PrefixLen),
		Gateway: n.GatewayIP,
		MAC:     n.GuestMAC,
		DNS:     n.DNS,
		MTU:     n.MTU,
	}
	cfg.Net = &vmm.Net{TAP: n.TAP, MAC: n.GuestMAC}
	// QEMU is started through StartProcess (which also enters rootless
	// mode's user namespace); Firecracker's driver enters NetNS itself.
	cfg.StartProcess = n.StartProcess
	cfg.NetNS = n.NetNS
	var sp []state.Port
	for _, p := range n.Ports {
		sp = append(sp, state.Port{HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort, Proto: p.Proto})
	}
	vm.Record.Network = state.Network{Mode: mode, HostIP: n.HostIP, GuestIP: n.GuestIP, Netns: n.NetNS, TAP: n.TAP, Ports: sp}
	return nil
}

// checkNetworkPrivileges refuses a mode this user cannot run before any
// image or disk work, so the error comes first and costs nothing.
func checkNetworkPrivileges(mode string) error {
	sp, err := network.ParseMode(mode)
	if err != nil || os.Geteuid() == 0 {
		return err
	}
	switch sp.Mode {
	case network.ModeBridged:
		return fmt.Errorf("%w: run fcvm as root, or use --network rootless", network.ErrNeedRoot)
	case network.ModeNS:
		return fmt.Errorf("%w: joining a network namespace (--network ns:) takes root", network.ErrNeedRoot)
	}
	return nil
}

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// reclaimNetwork removes a dead VM's network from its saved state.
func reclaimNetwork(r *state.Record, log *slog.Logger) error {
	b, err := os.ReadFile(filepath.Join(r.Dir, networkFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var n network.Network
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("read network state of %s: %w", r.Name, err)
	}
	if err := network.Reclaim(&n); err != nil {
		return err
	}
	// A concurrent gc may have reclaimed it first.
	if err := os.Remove(filepath.Join(r.Dir, networkFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
