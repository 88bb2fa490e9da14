package engine

// Rename gives the VM nameOrID the name newName, running or not, as
// podman's rename does. A name another VM has is refused
// (state.ErrNameInUse).
func (e *Engine) Rename(nameOrID, newName string) error {
	store, rec, err := e.record(nameOrID)
	if err != nil {
		return err
	}
	_, err = store.Rename(rec.ID, newName)
	return err
}
