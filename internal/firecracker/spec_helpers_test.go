package firecracker

import (
	"encoding/json"
	"net/http"

	"github.com/fcvm/fcvm/internal/firecracker/fcspec"
)

// Spec adapts fcspec to the driver's typed requests for the tests.
type Spec struct{ s *fcspec.Spec }

// SpecError is a request the spec rejects.
type SpecError = fcspec.Error

func LoadSpec() (*Spec, error) {
	s, err := fcspec.Load()
	if err != nil {
		return nil, err
	}
	return &Spec{s}, nil
}

func (s *Spec) ValidateRequest(r Request) error {
	body, err := r.JSON()
	if err != nil {
		return err
	}
	return s.s.ValidateRequest(r.Method, r.Path, body)
}

func (s *Spec) ValidateResponse(r Request, status int, body []byte) error {
	return s.s.ValidateResponse(r.Method, r.Path, status, body)
}

func (s *Spec) ValidateVMConfig(c VMConfig) error {
	doc, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return s.s.ValidateVMConfig(doc)
}

func (s *Spec) ValidateHTTP(r *http.Request) error { return s.s.ValidateHTTP(r) }

// validateAll checks every request against the spec.
func validateAll(reqs []Request) error {
	spec, err := LoadSpec()
	if err != nil {
		return err
	}
	for _, r := range reqs {
		if err := spec.ValidateRequest(r); err != nil {
			return err
		}
	}
	return nil
}
