package fcspec

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"testing"

	"github.com/getkin/kin-openapi/openapi2"
)

var update = flag.Bool("update", false, "rewrite firecracker.json from firecracker.yaml")

// TestSpecJSONCurrent: the JSON parsed at run time says exactly what the
// YAML says.
func TestSpecJSONCurrent(t *testing.T) {
	var doc openapi2.T
	if err := openapi2.UnmarshalFromData(specYAML, &doc); err != nil {
		t.Fatal(err)
	}
	want, err := json.MarshalIndent(&doc, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile("firecracker.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(want, specJSON) {
		t.Fatal("firecracker.json is stale: run go generate ./internal/firecracker")
	}
	fromYAML, err := parseSpec(specYAML)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := parseSpec(specJSON)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(fromYAML.doc)
	b, _ := json.Marshal(fromJSON.doc)
	if !bytes.Equal(a, b) {
		t.Error("the spec parsed from JSON differs from the one parsed from YAML")
	}
}

// BenchmarkLoadUncached is what each test process pays once before its
// first validation: parse, convert and index the embedded spec.
func BenchmarkLoadUncached(b *testing.B) {
	for b.Loop() {
		// Call the function Load wraps, bypassing the cache.
		if _, err := loadSpec(); err != nil {
			b.Fatal(err)
		}
	}
}
