package state

import "testing"

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"web": true, "a": true, "Web-1.prod_x": true, "0": true, "adjective_noun": true,
		"": false, "-a": false, "_a": false, ".a": false, "a b": false, "a/b": false, "é": false, "a:b": false,
	} {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
	for range 100 {
		if n := generateName(nil); !validName(n) {
			t.Errorf("generated invalid name %q", n)
		}
	}
}
