package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

var osGetpid = os.Getpid

// ProcessOf returns the process that has pid now. It fails with
// [ErrNoProcess] if there is none or it is a zombie.
func ProcessOf(pid int) (Process, error) {
	if pid <= 0 {
		return Process{}, fmt.Errorf("read process %d: %w", pid, ErrNoProcess)
	}
	b, err := readFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return Process{}, fmt.Errorf("read process %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return Process{}, fmt.Errorf("read process %d: %w", pid, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return Process{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	// A zombie has exited; its PID is only held until its parent reaps
	// it. X (dead) is only ever seen in a race with reaping.
	if st.State == 'Z' || st.State == 'X' {
		return Process{}, fmt.Errorf("read process %d: %w", pid, ErrNoProcess)
	}
	return Process{PID: pid, StartTime: st.StartTime}, nil
}

// Memory reads the process's RSS and PSS. It fails with [ErrNoProcess] if p
// is not alive, checked before and after reading so the numbers never
// belong to a process that reused the PID.
func (p Process) Memory() (Memory, error) {
	if !p.Alive() {
		return Memory{}, fmt.Errorf("read memory of %v: %w", p, ErrNoProcess)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/smaps_rollup")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrNoProcess
		}
		return Memory{}, fmt.Errorf("read memory of %v: %w", p, err)
	}
	if !p.Alive() {
		return Memory{}, fmt.Errorf("read memory of %v: %w", p, ErrNoProcess)
	}
	m, err := parseSmapsRollup(b)
	if err != nil {
		return Memory{}, fmt.Errorf("parse /proc/%d/smaps_rollup: %w", p.PID, err)
	}
	return m, nil
}
