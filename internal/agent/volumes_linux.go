package agent

import (
	"errors"

	"github.com/fcvm/fcvm/internal/channel"
)

func (a *Agent) setupNetwork(n *channel.NetPlan) error {
	if n == nil {
		return nil
	}
	return errors.New("guest networking is not built yet: use --network none")
}

func (a *Agent) mountVolumes(v []channel.VolumePlan) error {
	if len(v) == 0 {
		return nil
	}
	return errors.New("volumes are not built yet")
}
