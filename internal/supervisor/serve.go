package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fcvm/fcvm/internal/atomicfile"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/state"
)

// ServeRecord describes a running memory server (`fcvm snapshot serve
// TAG`), so that `fcvm snapshot run --serve PID` can find it and a reused
// PID is never mistaken for one.
type ServeRecord struct {
	Process state.Process `json:"process"`
	Tag     string        `json:"tag"`
	Driver  string        `json:"driver"`
	MemFile string        `json:"mem_file"`
	Socket  string        `json:"socket"`

	path string
}

func serveRecordPath(dirs datadir.Dirs, pid int) string {
	return filepath.Join(dirs.Runtime, fmt.Sprintf("serve-%d.json", pid))
}

// PrepareServe checks tag and picks the memory file and socket a server
// for it uses.
func PrepareServe(dirs datadir.Dirs, tag string) (*ServeRecord, error) {
	snaps := &snapshot.Store{Dir: dirs.Snapshots()}
	m, err := snaps.Load(tag)
	if err != nil {
		return nil, err
	}
	// 0700: the memory server's socket in it hands out the snapshot's
	// memory to whoever connects.
	if err := os.MkdirAll(dirs.Runtime, 0o700); err != nil {
		return nil, err
	}
	pid := os.Getpid()
	return &ServeRecord{
		Process: state.Self(),
		Tag:     tag,
		Driver:  m.Driver,
		MemFile: filepath.Join(snaps.Path(tag), m.Memory()),
		Socket:  filepath.Join(dirs.Runtime, fmt.Sprintf("uffd-%s-%d.sock", tag, pid)),
		path:    serveRecordPath(dirs, pid),
	}, nil
}

// Register publishes the record.
func (r *ServeRecord) Register() error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(r.path, b, 0o644); err != nil {
		return fmt.Errorf("register memory server: %w", err)
	}
	return nil
}

// Unregister removes the record.
func (r *ServeRecord) Unregister() { os.Remove(r.path) }

// FindServe returns the live memory server with pid.
func FindServe(dirs datadir.Dirs, pid int) (*ServeRecord, error) {
	b, err := os.ReadFile(serveRecordPath(dirs, pid))
	var r ServeRecord
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil || !r.Process.Alive() {
		return nil, fmt.Errorf("PID %d is not a memory server (start one with fcvm snapshot serve TAG)", pid)
	}
	return &r, nil
}

// StopClones ends every VM recorded as a clone of the memory server
// servePID, through [Kill]. The server signals the clone processes
// connected to it itself, through the pidfds it holds for them
// (uffd.Server.SignalClients): a PID is never signalled by number here.
func StopClones(dirs datadir.Dirs, servePID int) error {
	store, err := state.Open(dirs.VMs())
	if err != nil {
		return err
	}
	recs, _ := store.List()
	var errs []error
	for _, r := range recs {
		if r.ServePID == servePID && r.Effective().Live() {
			if err := Kill(r, 10*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
