package state_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fcvm/fcvm/internal/state"
)

// A supervisor's life with the store: create the record as its own (so a
// crash shows the VM dead, not stuck), move it through its statuses, and
// remove it for --rm.
func ExampleStore() {
	dir, _ := os.MkdirTemp("", "vms")
	defer os.RemoveAll(dir)
	st, err := state.Open(filepath.Join(dir, "vms"))
	if err != nil {
		panic(err)
	}

	r := &state.Record{
		Name: "web", Image: "nginx:alpine", Driver: "qemu",
		Status: state.StatusStarting, Supervisor: state.Self(), AutoRemove: true,
	}
	if err := st.Create(r); err != nil {
		panic(err) // errors.Is(err, state.ErrNameInUse): tell the user
	}
	st.Update(r.ID, func(r *state.Record) error {
		r.Status, r.Started = state.StatusRunning, time.Now()
		return nil
	})
	got, _ := st.Get("web")
	fmt.Println(got.Name, got.Effective())

	code := 0
	st.Update(r.ID, func(r *state.Record) error {
		r.Status, r.ExitCode, r.Finished = state.StatusExited, &code, time.Now()
		return nil
	})
	if r.AutoRemove {
		st.Remove(r.ID)
	}
	_, err = st.Get("web")
	fmt.Println(err)
	// Output:
	// web running
	// no such VM: web
}
