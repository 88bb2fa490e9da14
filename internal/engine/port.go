package engine

import (
	"fmt"

	"github.com/fcvm/fcvm/internal/state"
)

// Ports returns the ports the VM nameOrID publishes, as its record holds
// them, whether or not it is running (as podman's port does for a
// container that has them).
func (e *Engine) Ports(nameOrID string) ([]state.Port, error) {
	rec, err := e.Inspect(nameOrID)
	if err != nil {
		return nil, err
	}
	if len(rec.Network.Ports) == 0 {
		return nil, fmt.Errorf("port %s: the VM publishes no ports: publish them when it starts with fcvm run -p HOSTPORT:GUESTPORT", nameOrID)
	}
	return rec.Network.Ports, nil
}
