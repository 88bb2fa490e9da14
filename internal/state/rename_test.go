package state

import (
	"errors"
	"testing"
)

func TestRename(t *testing.T) {
	s := newStore(t)
	a, b := &Record{Name: "a"}, &Record{Name: "b"}
	for _, r := range []*Record{a, b} {
		if err := s.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Rename(a.ID, "c")
	if err != nil || got.Name != "c" {
		t.Fatalf("Rename a to c = %+v, %v", got, err)
	}
	if r, err := s.Get("c"); err != nil || r.ID != a.ID {
		t.Errorf("Get(c) after rename = %+v, %v; want a's record", r, err)
	}
	if _, err := s.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(a) after rename: %v, want ErrNotFound", err)
	}
	if _, err := s.Rename(a.ID, "b"); !errors.Is(err, ErrNameInUse) {
		t.Errorf("Rename to b's name: %v, want ErrNameInUse", err)
	}
	if _, err := s.Rename(a.ID, "-bad"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Rename to -bad: %v, want ErrInvalidName", err)
	}
	if r, _ := s.Get(a.ID); r.Name != "c" {
		t.Errorf("a failed rename changed the name to %q", r.Name)
	}
	// Renaming to its own name is not a clash.
	if _, err := s.Rename(a.ID, "c"); err != nil {
		t.Errorf("Rename c to c: %v", err)
	}
	if _, err := s.Rename(newID(), "d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Rename of an unknown ID: %v, want ErrNotFound", err)
	}
	if err := s.Create(&Record{Name: "a"}); err != nil {
		t.Errorf("the old name is free again: %v", err)
	}
}
