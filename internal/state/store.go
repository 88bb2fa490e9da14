package state

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcvm/fcvm/internal/atomicfile"
)

// recordFile is the name of the record in each VM's directory.
const recordFile = "record.json"

// Hidden names in the store directory: a VM being created, and a VM being
// deleted.
const (
	stagingPrefix = ".create-"
	trashPrefix   = ".trash-"
)

var (
	// ErrNotFound means no VM has that name, ID or ID prefix. Its
	// message, wrapped, is "no such VM: x".
	ErrNotFound = errors.New("no such VM")
	// ErrAmbiguous means an ID prefix matches more than one VM.
	ErrAmbiguous = errors.New("ambiguous VM ID prefix")
	// ErrNameInUse is what a *NameInUseError matches with errors.Is.
	ErrNameInUse = errors.New("state: name in use")
	// ErrMounted means Remove found something mounted in the VM's
	// directory and left it alone.
	ErrMounted = errors.New("state: VM directory has mounts")
	// ErrInvalidName means a name does not follow podman's rule:
	// [a-zA-Z0-9][a-zA-Z0-9_.-]*.
	ErrInvalidName = errors.New("invalid VM name")
)

// NameInUseError is returned by [Store.Create] when another VM has the name.
type NameInUseError struct {
	Name string
	ID   string // the VM that has it
}

func (e *NameInUseError) Error() string {
	return fmt.Sprintf("name %q is already in use by VM %s: choose another --name or remove it with fcvm rm %s",
		e.Name, shortID(e.ID), e.Name)
}

// Is makes errors.Is(err, ErrNameInUse) true.
func (e *NameInUseError) Is(target error) bool { return target == ErrNameInUse }

// RecordError is one record [Store.List] could not read.
type RecordError struct {
	ID  string // the directory name
	Err error
}

func (e *RecordError) Error() string { return fmt.Sprintf("read VM record %s: %v", e.ID, e.Err) }
func (e *RecordError) Unwrap() error { return e.Err }

// Store is a directory of VM records. Its methods are safe for concurrent
// use by any number of goroutines and processes.
type Store struct {
	dir string
}

// Open returns the store in dir. It does not create dir: a store whose
// directory does not exist is empty until the first Create, so read-only
// commands like fcvm ls never write.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open VM store: no directory")
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// VMDir is where the VM with this ID keeps its record and, unless its
// record says otherwise, its data.
func (s *Store) VMDir(id string) string { return filepath.Join(s.dir, id) }

// Create stores a new record. It fills in ID (random, 64 hex digits), Name
// (adjective_noun), Dir (the VM's directory in the store), Created (now) and
// Status (created) where r leaves them empty, so r describes the stored
// record afterwards. It fails with a *NameInUseError if any VM, live or
// not, has r.Name.
func (s *Store) Create(r *Record) error {
	if r.Name != "" && !validName(r.Name) {
		return fmt.Errorf("create VM: %w %q: use letters, digits, _ . and -, starting with a letter or digit", ErrInvalidName, r.Name)
	}
	if r.ID != "" && !isID(r.ID) {
		return fmt.Errorf("create VM: ID %q is not 64 lowercase hex digits", r.ID)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create VM: %w", err)
	}
	unlock, err := lockDir(s.dir)
	if err != nil {
		return fmt.Errorf("create VM: %w", err)
	}
	defer unlock.Unlock()

	// Under the store lock nobody else can add a name, so this check
	// holds until the rename below. Unreadable records cannot be
	// checked; List's error about them is for ls to report, not us.
	recs, _ := s.List()
	taken := make(map[string]bool, len(recs))
	ids := make(map[string]bool, len(recs))
	for _, o := range recs {
		if o.Name == r.Name {
			return &NameInUseError{Name: r.Name, ID: o.ID}
		}
		taken[o.Name] = true
		ids[o.ID] = true
	}
	if r.Name == "" {
		r.Name = generateName(taken)
	}
	if r.ID == "" {
		r.ID = newID()
	} else if ids[r.ID] {
		return fmt.Errorf("create VM: ID %s is already in use", r.ID)
	}
	if r.Dir == "" {
		r.Dir = s.VMDir(r.ID)
	}
	if r.Created.IsZero() {
		r.Created = time.Now()
	}
	if r.Status == "" {
		r.Status = StatusCreated
	}

	// Build the VM's directory under a hidden name and rename it into
	// place, so no reader ever sees a VM without its record.
	staging := filepath.Join(s.dir, stagingPrefix+r.ID)
	if err := os.Mkdir(staging, 0o700); err != nil {
		return fmt.Errorf("create VM %s: %w", r.Name, err)
	}
	if err := writeRecord(staging, r); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("create VM %s: %w", r.Name, err)
	}
	if err := os.Rename(staging, s.VMDir(r.ID)); err != nil {
		os.RemoveAll(staging)
		return fmt.Errorf("create VM %s: %w", r.Name, err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("create VM %s: %w", r.Name, err)
	}
	return nil
}

// Get finds a VM by full ID, exact name or unique ID prefix of at least 3
// characters, in that order of preference, as podman does. It fails with an error wrapping
// ErrNotFound ("no such VM: x") or ErrAmbiguous.
func (s *Store) Get(nameOrID string) (*Record, error) {
	if isID(nameOrID) {
		r, err := s.read(nameOrID)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	recs, _ := s.List()
	for _, r := range recs {
		if r.Name == nameOrID {
			return r, nil
		}
	}
	if len(nameOrID) >= 3 && isHex(nameOrID) {
		var match []*Record
		for _, r := range recs {
			if strings.HasPrefix(r.ID, nameOrID) {
				match = append(match, r)
			}
		}
		switch len(match) {
		case 1:
			return match[0], nil
		case 0:
		default:
			var ids []string
			for _, r := range match {
				ids = append(ids, shortID(r.ID)+" ("+r.Name+")")
			}
			return nil, fmt.Errorf("%w %q: it matches %s: give more of the ID, or the name",
				ErrAmbiguous, nameOrID, strings.Join(ids, ", "))
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, nameOrID)
}

// Update changes the record of the VM with this full ID: it calls fn with
// the current record under the VM's lock and stores what fn leaves, unless
// fn returns an error, which Update returns unchanged. fn must not change
// the ID or the name, and must not call Store methods: it runs under the
// VM's lock, and Remove or Update of this VM would wait for it forever,
// Create or Sweep would break the lock order. Keep fn short: other
// commands on this VM wait for it.
func (s *Store) Update(id string, fn func(*Record) error) (*Record, error) {
	if !isID(id) {
		return nil, fmt.Errorf("update VM: %w: %s (want a full ID)", ErrNotFound, id)
	}
	unlock, err := lockDir(s.VMDir(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("update VM: %w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("update VM %s: %w", id, err)
	}
	defer unlock.Unlock()
	// The directory may have been removed while we waited for its lock;
	// then this read fails and nothing is written.
	r, err := s.read(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("update VM: %w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("update VM: %w", err)
	}
	name := r.Name
	if err := fn(r); err != nil {
		return nil, err
	}
	if r.ID != id || r.Name != name {
		return nil, fmt.Errorf("update VM %s: the ID and name cannot change", id)
	}
	if err := writeRecord(s.VMDir(id), r); err != nil {
		return nil, fmt.Errorf("update VM %s: %w", r.Name, err)
	}
	return r, nil
}

// List returns every VM, oldest first. It fails only if the store cannot be
// read at all. A record that cannot be read is left out and reported as a
// *RecordError in the returned error, alongside the other records: ls
// should show the rest and warn, never fail because of one bad file.
func (s *Store) List() ([]*Record, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return []*Record{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	// Each record costs a few system calls and a JSON decode: spread
	// them over the CPUs, which matters for fcvm ls with many VMs.
	read := make([]*Record, len(ids))
	errs := make([]error, len(ids))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), 8, (len(ids)+15)/16) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(ids); i = int(next.Add(1) - 1) {
				read[i], errs[i] = s.readListed(ids[i])
			}
		})
	}
	wg.Wait()
	recs := make([]*Record, 0, len(ids))
	for _, r := range read {
		if r != nil {
			recs = append(recs, r)
		}
	}
	slices.SortFunc(recs, func(a, b *Record) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return recs, errors.Join(errs...)
}

// Remove deletes the VM with this full ID: its directory, record included.
// It waits for an Update in progress, then renames the directory out of
// sight before deleting it, so other commands never see half a VM. Removing
// a VM that does not exist succeeds. It fails with ErrMounted, deleting
// nothing, if anything is mounted in the directory: deleting through a
// mount would destroy what is mounted. Remove does not touch r.RuntimeDir or
// an r.Dir outside the store; the caller cleans those up first.
func (s *Store) Remove(id string) error {
	if !isID(id) {
		return fmt.Errorf("remove VM: %w: %s (want a full ID)", ErrNotFound, id)
	}
	unlock, err := lockDir(s.VMDir(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove VM %s: %w", id, err)
	}
	mps, err := mountedUnder(s.VMDir(id))
	if err == nil && len(mps) > 0 {
		err = fmt.Errorf("%w: %s: unmount them first (stop the VM, or fcvm gc)", ErrMounted, strings.Join(mps, ", "))
	}
	if err != nil {
		unlock.Unlock()
		return fmt.Errorf("remove VM %s: %w", id, err)
	}
	trash := filepath.Join(s.dir, trashPrefix+id+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	err = os.Rename(s.VMDir(id), trash)
	unlock.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove VM %s: %w", id, err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("remove VM %s: %w", id, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove VM %s: %w", id, err)
	}
	return nil
}

// Sweep deletes what crashes left behind: VMs half created or half
// removed, and temporary record files. It does not judge whether VMs are
// dead; that is fcvm gc's business.
func (s *Store) Sweep() error {
	unlock, err := lockDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sweep VM store: %w", err)
	}
	defer unlock.Unlock()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("sweep VM store: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, stagingPrefix), strings.HasPrefix(name, trashPrefix):
			// Staging dirs are only live under the store lock, which we
			// hold; trash dirs are never used again once renamed.
			if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil {
				errs = append(errs, err)
			}
		case e.IsDir() && isID(name):
			if err := s.sweepVM(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("sweep VM store: %w", errors.Join(errs...))
	}
	return nil
}

// sweepVM removes temporary record files a killed writer left in one VM's
// directory.
func (s *Store) sweepVM(id string) error {
	dir := s.VMDir(id)
	unlock, err := lockDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock.Unlock()
	tmps, _ := filepath.Glob(filepath.Join(dir, "."+recordFile+".tmp-*"))
	var errs []error
	for _, t := range tmps {
		if err := os.Remove(t); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readListed reads a record found by ReadDir: a VM removed since is
// neither a record nor an error.
func (s *Store) readListed(id string) (*Record, error) {
	r, err := s.read(id)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(s.VMDir(id)); errors.Is(serr, fs.ErrNotExist) {
			return nil, nil
		}
	}
	if err != nil {
		return nil, &RecordError{ID: id, Err: err}
	}
	return r, nil
}

// read loads one record. Errors wrap fs.ErrNotExist when the VM is gone.
func (s *Store) read(id string) (*Record, error) {
	b, err := readFile(filepath.Join(s.VMDir(id), recordFile))
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", recordFile, err)
	}
	if r.ID != id {
		return nil, fmt.Errorf("decode %s: record says ID %q", recordFile, r.ID)
	}
	return &r, nil
}

func writeRecord(dir string, r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(dir, recordFile), append(b, '\n'), 0o600)
}

// newID returns a random ID like podman's: 32 random bytes in hex. Like
// podman, it avoids IDs whose short form is all digits, which users would
// take for a number.
func newID() string {
	b := make([]byte, 32)
	for {
		rand.Read(b)
		id := hex.EncodeToString(b)
		if _, err := strconv.ParseUint(id[:12], 10, 64); err != nil {
			return id
		}
	}
}

func isID(s string) bool { return len(s) == 64 && isHex(s) }

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}
