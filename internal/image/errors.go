package image

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinels for the failures callers branch on. Every error a Store returns
// for one of these is an *Error whose Kind is the sentinel, so
// errors.Is(err, image.ErrNotFound) works through any wrapping.
var (
	ErrNotFound     = errors.New("image: not found")
	ErrBadReference = errors.New("image: malformed reference")
	ErrUnreachable  = errors.New("image: registry unreachable")
	ErrUnauthorized = errors.New("image: registry authentication required")
	ErrInUse        = errors.New("image: in use")
	ErrTooLarge     = errors.New("image: expands past the store's limits")
)

// Error is a failure a user can act on: Error() is one complete line that
// names what went wrong and what to do about it.
type Error struct {
	Kind error  // one of the sentinels above
	Ref  string // the image reference or ID concerned
	Msg  string // the whole user-facing line
	Err  error  // the cause, or nil
}

func (e *Error) Error() string { return e.Msg }

// Unwrap lets errors.Is match both the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func newError(kind error, ref string, cause error, format string, args ...any) *Error {
	return &Error{Kind: kind, Ref: ref, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// registryError turns what go-containerregistry returned for a registry
// operation on ref (served by host) into an *Error where it recognises the
// failure, and into "pull ref: cause" otherwise.
func registryError(ref, host string, tlsVerify bool, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
				return newError(ErrNotFound, ref, err, "image %s not found in the registry: check the name and tag", ref)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return unauthorized(ref, host, err)
			}
		}
		switch terr.StatusCode {
		case http.StatusNotFound:
			return newError(ErrNotFound, ref, err, "image %s not found in the registry: check the name and tag", ref)
		case http.StatusUnauthorized, http.StatusForbidden:
			return unauthorized(ref, host, err)
		}
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "server gave HTTP response to HTTPS client") ||
		strings.Contains(msg, "first record does not look like a TLS handshake") {
		return newError(ErrUnreachable, ref, err, "registry %s speaks plain HTTP, not HTTPS: pull with --tls-verify=false if you trust it", host)
	}
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr x509.CertificateInvalidError
	if errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &cerr) {
		return newError(ErrUnreachable, ref, err, "registry %s: TLS certificate not trusted (%v): install its CA, or pull with --tls-verify=false if you trust it", host, innermost(err))
	}
	var nerr net.Error
	var operr *net.OpError
	var dnserr *net.DNSError
	if errors.As(err, &operr) || errors.As(err, &dnserr) || errors.As(err, &nerr) {
		return newError(ErrUnreachable, ref, err, "registry %s unreachable: %v: check the address and that the registry is running", host, innermost(err))
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

func unauthorized(ref, host string, err error) *Error {
	return newError(ErrUnauthorized, ref, err,
		"registry %s refused access to %s (authentication required, or the image does not exist): log in with `podman login %s` or check the name", host, ref, host)
}

// innermost returns the most specific error in err's chain that still says
// something: the dial error rather than the HTTP request that wrapped it.
func innermost(err error) error {
	var operr *net.OpError
	if errors.As(err, &operr) {
		return operr
	}
	var dnserr *net.DNSError
	if errors.As(err, &dnserr) {
		return dnserr
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
