package agent

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"sync"
	"time"
)

// removeStale removes the container an earlier boot of this VM left in
// podman's storage on the upper disk (fcvm start boots the same disk
// again). podman run --replace would remove it as well, but it prints the
// removed container's name on its stdout, which is the container's
// output. Without such a container (a first boot) it costs a file read.
// It runs once per boot, before any start goes on: a second start request
// (a reconnect) waits for the first's and never removes this boot's
// container.
func (a *Agent) removeStale() { staleOnce.Do(a.removeStaleOnce) }

var staleOnce sync.Once

func (a *Agent) removeStaleOnce() {
	if _, err := a.container(); err == nil {
		return // this boot's container exists (a clone of a running VM)
	}
	b, err := os.ReadFile(upperMount + "/containers/storage/overlay-containers/containers.json")
	if err != nil || !bytes.Contains(b, []byte(`"`+containerName+`"`)) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "podman", append(podmanGlobal(), "rm", "--force", "--time", "0", containerName)...).CombinedOutput()
	a.log.Info("removed the container of an earlier boot", "err", err, "output", string(bytes.TrimSpace(out)))
}
