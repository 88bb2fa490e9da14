package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fcvm/fcvm/internal/flock"
	"github.com/fcvm/fcvm/internal/state"
)

// lease is the file that says a pool block is taken, and by whom.
type lease struct {
	ID    string        `json:"id"`
	Owner state.Process `json:"owner"`
	// What to remove if the owner died without releasing.
	Link  string `json:"link"`
	Table string `json:"table"`
	NetNS string `json:"netns"`
}

// leases is DataDir/network: one file per taken block under leases/, named
// by the block's index, and a lock file. Every change happens under the
// flock, so concurrent fcvm runs never take one block twice.
type leases struct {
	dir string
}

func (l leases) lock() (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Join(l.dir, "leases"), 0o755); err != nil {
		return nil, fmt.Errorf("make lease dir: %w", err)
	}
	lk, err := flock.Acquire(context.Background(), filepath.Join(l.dir, "lock"), nil)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	return lk.Unlock, nil
}

func (l leases) path(i int) string { return filepath.Join(l.dir, "leases", strconv.Itoa(i)) }

func readLease(path string) (lease, error) {
	var ls lease
	b, err := os.ReadFile(path)
	if err != nil {
		return ls, err
	}
	return ls, json.Unmarshal(b, &ls)
}

// take allocates a block of pool for le. A lease whose owner is dead is
// reclaimed (its leftovers removed by reclaim) and reused, but only once
// no never-used block is left, so a crashed VM's leftovers stay for fcvm gc
// to report as long as there is room.
func (l leases) take(pool netip.Prefix, le lease, reclaim func(lease) error) (int, string, error) {
	unlock, err := l.lock()
	if err != nil {
		return 0, "", err
	}
	defer unlock()
	ents, err := os.ReadDir(filepath.Join(l.dir, "leases"))
	if err != nil {
		return 0, "", fmt.Errorf("list leases: %w", err)
	}
	n := poolSize(pool)
	used := make(map[int]bool, len(ents))
	for _, e := range ents {
		if i, err := strconv.Atoi(e.Name()); err == nil {
			used[i] = true
		}
	}
	pick := -1
	for i := 0; i < n; i++ {
		if !used[i] {
			pick = i
			break
		}
	}
	if pick < 0 {
		for i := 0; i < n && pick < 0; i++ {
			old, err := readLease(l.path(i))
			if err == nil && old.Owner.Alive() {
				continue
			}
			if err == nil {
				if err := reclaim(old); err != nil {
					return 0, "", fmt.Errorf("reclaim lease of dead VM %s: %w", old.ID, err)
				}
			}
			pick = i
		}
	}
	if pick < 0 {
		return 0, "", fmt.Errorf("%w: all %d blocks of %s are in use by running VMs: stop some, or use --network rootless", ErrPoolExhausted, n, pool)
	}
	b, _ := json.Marshal(le)
	path := l.path(pick)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return 0, "", fmt.Errorf("write lease: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return 0, "", fmt.Errorf("write lease: %w", err)
	}
	return pick, path, nil
}

// release removes the lease at path if it still belongs to id.
func (l leases) release(path, id string) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if path != "" {
		le, err := readLease(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err == nil && le.ID != id:
			// Reclaimed and handed to another VM already.
		default:
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("release lease: %w", err)
			}
		}
	}
	return nil
}

// The host's net.ipv4.ip_forward: bridged mode needs it for guest egress
// and for published ports reached from other machines. fcvm turns it on
// when it is off and leaves a marker saying so. It never turns it off
// again (as docker and podman): by then something else on the host (a
// podman CNI bridge, say) may rely on it, and turning it off under that is
// worse than leaving it on.
const ipForward = "/proc/sys/net/ipv4/ip_forward"

func (l leases) markerPath() string { return filepath.Join(l.dir, "ip_forward.fcvm") }

// enableForward turns on ip_forward if needed; it reports whether fcvm
// changed it (now or earlier).
func (l leases) enableForward() (bool, error) {
	unlock, err := l.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	b, err := os.ReadFile(ipForward)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", ipForward, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		_, err := os.Stat(l.markerPath())
		return err == nil, nil
	}
	if err := os.WriteFile(l.markerPath(), []byte(fmt.Sprintf("fcvm turned net.ipv4.ip_forward on at %s for bridged VMs; turn it off with sysctl -w net.ipv4.ip_forward=0 when no bridged VM runs\n", time.Now().Format(time.RFC3339))), 0o644); err != nil {
		return false, fmt.Errorf("record ip_forward change: %w", err)
	}
	if err := os.WriteFile(ipForward, []byte("1"), 0); err != nil {
		os.Remove(l.markerPath())
		return false, fmt.Errorf("enable %s: %w", ipForward, err)
	}
	return true, nil
}
