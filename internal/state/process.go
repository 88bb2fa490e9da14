package state

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// Process names one process across time: a PID alone may be reused by an
// unrelated process once the first one exits, a PID with its start time may
// not.
type Process struct {
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat: clock ticks after boot at
	// which the process started. 0 means unknown, and such a Process is
	// never alive.
	StartTime uint64 `json:"start_time"`
}

// ErrNoProcess is returned by [ProcessOf] when no process has that PID (or
// it is a zombie: it has exited and only waits to be reaped).
var ErrNoProcess = errors.New("state: no such process")

var self = sync.OnceValue(func() Process {
	p, err := ProcessOf(osGetpid())
	if err != nil {
		// /proc is missing or unreadable. StartTime 0 makes every
		// Alive check on this record fail, which is the safe side.
		return Process{PID: osGetpid()}
	}
	return p
})

// Self is the calling process.
func Self() Process { return self() }

// Alive reports whether p is still running: the PID exists, is not a zombie
// and started at p.StartTime. A zero Process is not alive.
func (p Process) Alive() bool {
	if p.PID <= 0 || p.StartTime == 0 {
		return false
	}
	now, err := ProcessOf(p.PID)
	return err == nil && now.StartTime == p.StartTime
}

func (p Process) String() string { return fmt.Sprintf("pid %d (start %d)", p.PID, p.StartTime) }

// procStat is what fcvm needs from /proc/PID/stat.
type procStat struct {
	State     byte
	StartTime uint64
}

// parseStat decodes /proc/PID/stat. The command name (field 2) is in
// parentheses and may itself contain spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 || bytes.IndexByte(b, '(') < 0 {
		return procStat{}, errors.New("no command name")
	}
	// Fields from 3 (state) on; start time is field 22.
	fields := bytes.Fields(b[end+1:])
	const startTime = 22 - 3
	if len(fields) <= startTime {
		return procStat{}, fmt.Errorf("%d fields after the command name, want at least %d", len(fields), startTime+1)
	}
	if len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("state %q is not one character", fields[0])
	}
	st, err := strconv.ParseUint(string(fields[startTime]), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("start time: %w", err)
	}
	return procStat{State: fields[0][0], StartTime: st}, nil
}

// Memory is a process's memory use, from /proc/PID/smaps_rollup.
type Memory struct {
	// RSSKiB counts every resident page once per process that maps it.
	RSSKiB uint64 `json:"rss_kib"`
	// PSSKiB divides each shared page among the processes that map it,
	// so the PSS of several clones sums to what they really use.
	PSSKiB uint64 `json:"pss_kib"`
}

// parseSmapsRollup decodes the Rss and Pss lines of /proc/PID/smaps_rollup
// ("Rss:     1234 kB").
func parseSmapsRollup(b []byte) (Memory, error) {
	var m Memory
	var haveRSS, havePSS bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) {
		case "Rss":
			dst, haveRSS = &m.RSSKiB, true
		case "Pss":
			dst, havePSS = &m.PSSKiB, true
		default:
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return Memory{}, fmt.Errorf("%s: unexpected value %q", key, rest)
		}
		v, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("%s: %w", key, err)
		}
		*dst = v
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	if !haveRSS || !havePSS {
		return Memory{}, errors.New("no Rss or Pss line")
	}
	return m, nil
}
