package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps fences the guest agent: it runs as PID 1 in every guest, so it
// must stay small, static and free of host-side machinery.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := map[string]bool{}
	for _, d := range strings.Fields(string(out)) {
		deps[d] = true
	}
	forbidden := map[string]string{
		"github.com/google/nftables":                           "host firewall rules are made on the host",
		"github.com/fcvm/fcvm/internal/network":                "host-side networking (namespaces, pasta, nftables)",
		"github.com/fcvm/fcvm/internal/qemu":                   "VMM drivers run on the host",
		"github.com/fcvm/fcvm/internal/firecracker":            "VMM drivers run on the host",
		"github.com/fcvm/fcvm/internal/supervisor":             "the supervisor is the host's half",
		"github.com/fcvm/fcvm/internal/image":                  "images are pulled on the host and arrive as a disk",
		"github.com/google/go-containerregistry/pkg/v1/remote": "no registry access from the guest",
		"github.com/getkin/kin-openapi/openapi3":               "spec validation is a host concern",
		"github.com/fcvm/fcvm/internal/uffd":                   "the memory server runs on the host",
		"github.com/spf13/cobra":                               "the agent has no command line",
	}
	for pkg, why := range forbidden {
		if deps[pkg] {
			t.Errorf("fc-agent imports %s: %s", pkg, why)
		}
	}
	cgo := exec.Command("go", "list", "-f", "{{.CgoFiles}}", "-deps", ".")
	cgo.Env = append(cgo.Environ(), "CGO_ENABLED=0")
	if out, err := cgo.Output(); err != nil {
		t.Fatalf("fc-agent does not build without cgo: %v", err)
	} else if strings.Contains(string(out), ".go") {
		t.Errorf("fc-agent has cgo files; it must build static with CGO_ENABLED=0")
	}
}
