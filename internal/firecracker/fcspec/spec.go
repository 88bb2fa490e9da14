// Package fcspec checks Firecracker API requests, responses and
// --config-file documents against Firecracker's own API description
// (firecracker.yaml, API 1.17, embedded here).
//
// It exists for tests: the driver's contract tests validate every request
// the driver can send, and the fctest stand-in validates what arrives on
// its socket. The driver itself does not link it, so that fcvm does not
// carry an OpenAPI engine and a JSON-schema package in every command.
//
// The swagger file leaves objects open (no additionalProperties: false),
// but Firecracker rejects unknown fields (serde deny_unknown_fields), so
// Spec closes every object that lists its properties and does not say
// otherwise: a misspelt field fails here as it would in Firecracker.
package fcspec

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

// specYAML is Firecracker's own swagger file for the API version the
// driver targets.
//
//go:embed firecracker.yaml
var specYAML []byte

// specJSON is specYAML as JSON, which is what Load parses: parsing the
// YAML costs about 110 ms on a slow core, the JSON about 8, once per test
// process. TestSpecJSONCurrent fails when the two differ.
//
//go:generate go test -run TestSpecJSONCurrent -update .
//go:embed firecracker.json
var specJSON []byte

// Spec validates requests and responses against the embedded API
// description.
type Spec struct {
	doc    *openapi3.T
	router routers.Router
}

// Load parses the embedded spec once per process.
var Load = sync.OnceValues(loadSpec)

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

// Error is a request (or config) the spec rejects.
type Error struct {
	// Request is "METHOD /path", or "config" for a --config-file document.
	Request string
	// Field is the offending field as a dotted path ("vcpu_count",
	// "mem_backend.backend_type"), empty when the whole request is wrong.
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("firecracker api %s: %s", e.Request, e.Reason)
	}
	return fmt.Sprintf("firecracker api %s: field %s: %s", e.Request, e.Field, e.Reason)
}

func httpRequest(method, path string, body []byte) (*http.Request, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// ValidateRequest reports whether Firecracker's spec accepts a request
// with this method, path and JSON body (nil for none).
func (s *Spec) ValidateRequest(method, path string, body []byte) error {
	req, err := httpRequest(method, path, body)
	if err != nil {
		return err
	}
	return s.ValidateHTTP(req)
}

// Operation names the spec's operation a request with this method and path
// reaches ("PUT /drives/{drive_id}"), or "" when there is none.
func (s *Spec) Operation(method, path string) string {
	req, err := httpRequest(method, path, nil)
	if err != nil {
		return ""
	}
	route, _, err := s.router.FindRoute(req)
	if err != nil {
		return ""
	}
	return route.Method + " " + route.Path
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
		return &Error{Request: name, Reason: "no such operation in the spec"}
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

// ValidateResponse checks a response body the server sent to a request
// with this method and path.
func (s *Spec) ValidateResponse(method, path string, status int, body []byte) error {
	req, err := httpRequest(method, path, nil)
	if err != nil {
		return err
	}
	name := method + " " + path
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		return &Error{Request: name, Reason: "no such operation in the spec"}
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
		return specError(name+" response", err)
	}
	return nil
}

// ValidateVMConfig checks a --config-file document (JSON): it has the
// shape of the spec's FullVmConfiguration.
func (s *Spec) ValidateVMConfig(doc []byte) error {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return fmt.Errorf("decode config: %w", err)
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
		return &Error{Request: name, Field: strings.Join(path, "."), Reason: reason}
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
		return &Error{Request: name, Field: field, Reason: reason}
	}
	return &Error{Request: name, Reason: err.Error()}
}
