package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"

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

// Signal sends sig to p, and to no other process: it opens a pidfd on
// p.PID first and checks the start time after, so the pidfd is known to
// hold the process that started at p.StartTime, and the signal goes
// through the pidfd, which a PID reused in between cannot redirect.
// Checking first and then kill(2) by number would leave that window
// open. It fails with [ErrNoProcess] if p is not alive (exited, a zombie,
// or its PID now belongs to another process): then nothing is sent. It
// needs Linux 5.3 (pidfd_open).
func (p Process) Signal(sig syscall.Signal) error {
	if p.PID <= 0 || p.StartTime == 0 {
		return fmt.Errorf("signal %v: %w", p, ErrNoProcess)
	}
	fd, err := unix.PidfdOpen(p.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %v: %w", p, ErrNoProcess)
	}
	if err != nil {
		return fmt.Errorf("signal %v: open pidfd: %w", p, err)
	}
	defer unix.Close(fd)
	if !p.Alive() {
		return fmt.Errorf("signal %v: %w", p, ErrNoProcess)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			err = ErrNoProcess
		}
		return fmt.Errorf("signal %v: %w", p, err)
	}
	return nil
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
