package firecracker

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// specYAML is Firecracker's own swagger file for the API version this
// driver targets. Requests are checked against it before a process starts,
// so a bad config is refused with the field named instead of surfacing as a
// 400 half way through a boot.
//
//go:embed firecracker.yaml
var specYAML []byte

// specJSON is specYAML as JSON, which is what is parsed at run time:
// parsing the YAML costs about 110 ms on a slow core, the JSON about 8, and
// the spec is parsed once per fcvm process, inside the launch budget.
// TestSpecJSONCurrent fails when the two differ.
//
//go:generate go test -run TestSpecJSONCurrent -update .
//go:embed firecracker.json
var specJSON []byte

// Spec validates requests and responses against the embedded API
// description.
//
// The swagger file leaves objects open (no additionalProperties: false),
// but Firecracker rejects unknown fields (serde deny_unknown_fields), so
// Spec closes every object that lists its properties and does not say
// otherwise. A misspelt field fails here as it would in Firecracker.
type Spec struct {
	doc    *openapi3.T
	router routers.Router
}

// LoadSpec parses the embedded spec once per process.
var LoadSpec = sync.OnceValues(loadSpec)

func loadSpec() (*Spec, error) { return parseSpec(specJSON) }

func parseSpec(data []byte) (*Spec, error) {
	var doc2 openapi2.T
	if err := openapi2.UnmarshalFromData(data, &doc2); err != nil {
		return nil, fmt.Errorf("parse firecracker.yaml: %w", err)
	}
	doc, err := openapi2conv.ToV3(&doc2)
	if err != nil {
		return nil, fmt.Errorf("convert firecracker.yaml: %w", err)
	}
	seen := map[*openapi3.Schema]bool{}
	for _, s := range doc.Components.Schemas {
		closeObjects(s, seen)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route firecracker.yaml: %w", err)
	}
	return &Spec{doc: doc, router: router}, nil
}

func closeObjects(ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
	if ref == nil || ref.Value == nil || seen[ref.Value] {
		return
	}
	s := ref.Value
	seen[s] = true
	ap := s.AdditionalProperties
	if len(s.Properties) > 0 && ap.Has == nil && ap.Schema == nil {
		no := false
		s.AdditionalProperties.Has = &no
	}
	for _, p := range s.Properties {
		closeObjects(p, seen)
	}
	closeObjects(s.Items, seen)
	closeObjects(ap.Schema, seen)
}

// SpecError is a request (or config) the spec rejects.
type SpecError struct {
	// Request is "METHOD /path", or "config" for a --config-file document.
	Request string
	// Field is the offending field as a dotted path ("vcpu_count",
	// "mem_backend.backend_type"), empty when the whole request is wrong.
	Field  string
	Reason string
}

func (e *SpecError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("firecracker api %s: %s", e.Request, e.Reason)
	}
	return fmt.Sprintf("firecracker api %s: field %s: %s", e.Request, e.Field, e.Reason)
}

func (s *Spec) httpRequest(r Request) (*http.Request, []byte, error) {
	body, err := r.JSON()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: encode: %w", r, err)
	}
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(r.Method, "http://localhost"+r.Path, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", r, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, body, nil
}

// ValidateRequest reports whether Firecracker's spec accepts r.
func (s *Spec) ValidateRequest(r Request) error {
	req, _, err := s.httpRequest(r)
	if err != nil {
		return err
	}
	return s.ValidateHTTP(req)
}

// ValidateHTTP validates a request as it arrives at a server: the fake API
// server in the tests uses this on the wire bytes.
func (s *Spec) ValidateHTTP(req *http.Request) error {
	name := req.Method + " " + req.URL.Path
	if req.URL.Host == "" {
		// A server sees a path, not a URL; the spec's one server is
		// http://localhost/.
		u := *req.URL
		u.Scheme, u.Host = "http", "localhost"
		req = req.Clone(req.Context())
		req.URL = &u
	}
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		return &SpecError{Request: name, Reason: "no such operation in the spec"}
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			SkipSettingDefaults: true,
			// A request body the spec does not describe (a body on GET
			// /version) is an error, not something to ignore.
			RejectWhenRequestBodyNotSpecified: true,
		},
	}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		return specError(name, err)
	}
	return nil
}

// ValidateResponse checks a response body the server sent for r.
func (s *Spec) ValidateResponse(r Request, status int, body []byte) error {
	req, _, err := s.httpRequest(r)
	if err != nil {
		return err
	}
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		return &SpecError{Request: r.String(), Reason: "no such operation in the spec"}
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 h,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return specError(r.String()+" response", err)
	}
	return nil
}

// ValidateVMConfig checks a --config-file document: it has the shape of
// the spec's FullVmConfiguration.
func (s *Spec) ValidateVMConfig(c VMConfig) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	ref := s.doc.Components.Schemas["FullVmConfiguration"]
	if ref == nil {
		return errors.New("firecracker.yaml has no FullVmConfiguration")
	}
	if err := ref.Value.VisitJSON(v); err != nil {
		return specError("config", err)
	}
	return nil
}

func specError(name string, err error) error {
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		reason := se.Reason
		if reason == "" {
			reason = se.Error()
		}
		path := se.JSONPointer()
		// An unknown field is reported at its parent object; name it.
		if f, ok := strings.CutPrefix(reason, `property "`); ok {
			if f, ok = strings.CutSuffix(f, `" is unsupported`); ok {
				path = append(path, f)
			}
		}
		return &SpecError{Request: name, Field: strings.Join(path, "."), Reason: reason}
	}
	var re *openapi3filter.RequestError
	if errors.As(err, &re) {
		reason := re.Reason
		if re.Err != nil {
			reason = re.Err.Error()
		}
		field := ""
		if re.Parameter != nil {
			field = re.Parameter.Name
		}
		return &SpecError{Request: name, Field: field, Reason: reason}
	}
	return &SpecError{Request: name, Reason: err.Error()}
}
