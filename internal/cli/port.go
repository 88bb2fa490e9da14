package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/state"
)

type portOptions struct {
	name string
	// guest is the GUESTPORT[/proto] argument, "" to list them all.
	guest string
}

func newPortCmd(env *Env) *cobra.Command {
	o := &portOptions{}
	cmd := &cobra.Command{
		Use:   "port NAME|ID [GUESTPORT[/PROTO]]",
		Short: "List a VM's published ports, or the host address of one",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			if len(args) == 2 {
				o.guest = args[1]
			}
			return runPort(env, o)
		},
	}
	return cmd
}

func runPort(env *Env, o *portOptions) error {
	ports, err := env.engine().Ports(o.name)
	if err != nil {
		return err
	}
	out, err := formatPortList(ports, o.guest)
	if err != nil {
		return fmt.Errorf("port %s: %w", o.name, err)
	}
	fmt.Fprint(env.Stdout, out)
	return nil
}

// formatPortList is podman port's output: with no filter one line per
// port, "80/tcp -> 127.0.0.1:8080"; with GUESTPORT[/proto] only the host
// addresses of that port, "127.0.0.1:8080".
func formatPortList(ports []state.Port, filter string) (string, error) {
	var port int
	proto := "tcp"
	if filter != "" {
		p, pr, ok := strings.Cut(filter, "/")
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || (ok && pr != "tcp" && pr != "udp") {
			return "", fmt.Errorf("parse %q: want GUESTPORT[/tcp|/udp], as 80 or 53/udp", filter)
		}
		port = n
		if ok {
			proto = pr
		}
	}
	var b strings.Builder
	for _, p := range ports {
		ip, pr := p.HostIP, p.Proto
		if ip == "" {
			ip = "0.0.0.0"
		}
		if pr == "" {
			pr = "tcp"
		}
		host := fmt.Sprintf("%s:%d", ip, p.HostPort)
		switch {
		case filter == "":
			fmt.Fprintf(&b, "%d/%s -> %s\n", p.GuestPort, pr, host)
		case p.GuestPort == port && pr == proto:
			fmt.Fprintln(&b, host)
		}
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("no published port %d/%s: list the VM's ports with fcvm port NAME", port, proto)
	}
	return b.String(), nil
}
