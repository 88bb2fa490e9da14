package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps test-only machinery out of the host binary: every fcvm
// command pays for the init of what it links (the OpenAPI engine and the
// JSON-schema package cost about 4 ms of each `fcvm ls`).
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := map[string]string{
		"github.com/getkin/kin-openapi/openapi3":           "Firecracker requests are validated against the spec in tests",
		"github.com/santhosh-tekuri/jsonschema/v6":         "pulled in by the OpenAPI engine",
		"github.com/fcvm/fcvm/internal/firecracker/fcspec": "test-only spec validation",
		"github.com/fcvm/fcvm/internal/firecracker/fctest": "the Firecracker stand-in is for tests",
		"testing": "test helpers must not reach the binary",
	}
	for _, d := range strings.Fields(string(out)) {
		if why, ok := forbidden[d]; ok {
			t.Errorf("fcvm imports %s: %s", d, why)
		}
	}
}
