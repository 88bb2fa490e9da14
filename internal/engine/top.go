package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// Top lists the processes of the container in the running VM nameOrID,
// as the guest agent reads them from its /proc (no ps needed in the
// image): PIDs as the container sees them.
func (e *Engine) Top(ctx context.Context, nameOrID string) ([]channel.Process, error) {
	var procs []channel.Process
	if err := e.ask(ctx, nameOrID, channel.KindTop, &procs); err != nil {
		return nil, fmt.Errorf("top %s: %w", nameOrID, err)
	}
	return procs, nil
}

// Stats is one sample of a VM's resource use.
type Stats struct {
	ID, Name string
	// At is when the sample was taken.
	At time.Time
	// Guest is the guest's view: CPU, memory, network, disks, processes.
	Guest channel.GuestStats
	// VMMRSSBytes and VMMCPUSeconds are what the VMM process costs the
	// host.
	VMMRSSBytes   uint64
	VMMCPUSeconds float64
}

// Stats samples the running VM nameOrID.
func (e *Engine) Stats(ctx context.Context, nameOrID string) (*Stats, error) {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return nil, err
	}
	s := &Stats{ID: rec.ID, Name: rec.Name, At: time.Now()}
	if err := e.ask(ctx, rec.ID, channel.KindStats, &s.Guest); err != nil {
		return nil, fmt.Errorf("stats %s: %w", nameOrID, err)
	}
	if m, err := rec.VMM.Memory(); err == nil {
		s.VMMRSSBytes = uint64(m.RSSKiB) << 10
	}
	s.VMMCPUSeconds = processCPU(rec.VMM.PID)
	return s, nil
}

// processCPU is the CPU time pid has used, in seconds (0 if unknown).
func processCPU(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// ask sends a request of kind to the running VM nameOrID and decodes the
// guest's one-reply answer into v.
func (e *Engine) ask(ctx context.Context, nameOrID string, kind channel.Kind, v any) error {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, payload, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: kind})
	if err != nil {
		return guestText(err)
	}
	conn.Close()
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("the guest's answer: %w", err)
	}
	return nil
}
