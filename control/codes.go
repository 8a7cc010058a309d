package control

import (
	"errors"
	"fmt"
	"strconv"
)

// Code is a stable error code carried in replies and logs. Codes are never
// reused; docs/protocol.md lists them.
type Code int

// The error codes of protocol version 1.
const (
	CodeCannotReachServer  Code = 1001 // the client could not reach or keep the server
	CodeBadToken           Code = 1002 // login refused: wrong token
	CodePortNotAllowed     Code = 1003 // remote_port outside allow_ports
	CodePortInUse          Code = 1004 // remote_port bound by someone else, or no free port
	CodeTooManyMappings    Code = 1005 // max_mappings_per_client reached
	CodeUnsupportedVersion Code = 1006 // login version not spoken by the server
	CodeMalformed          Code = 1007 // frame too large, malformed, unexpected, or stray stream
	CodeLoginTimeout       Code = 1008 // no valid login within login_timeout
	CodeDuplicateName      Code = 1009 // a mapping name registered twice in one session
	CodeTLS                Code = 1010 // TLS handshake or certificate refused
	CodeProxyRefused       Code = 1011 // the proxy refused the connection
	CodeShuttingDown       Code = 1012 // login refused: the server is shutting down (retried)
	CodeFeatureMissing     Code = 1013 // the server lacks a feature the mapping needs (client logs only)
	CodeRegistryDown       Code = 1014 // the fleet's registry (etcd) did not answer in time (retried)
	CodeLocalUnreachable   Code = 2001 // the client could not dial local_addr
	CodeMappingOffline     Code = 2002 // the mapping's local service is offline
)

var codeNames = map[Code]string{
	CodeCannotReachServer:  "cannot reach server",
	CodeBadToken:           "bad token",
	CodePortNotAllowed:     "port not allowed",
	CodePortInUse:          "port in use",
	CodeTooManyMappings:    "too many mappings",
	CodeUnsupportedVersion: "unsupported version",
	CodeMalformed:          "frame too large or malformed",
	CodeLoginTimeout:       "login timeout",
	CodeDuplicateName:      "duplicate mapping name",
	CodeTLS:                "TLS handshake or certificate refused",
	CodeProxyRefused:       "proxy refused the connection",
	CodeShuttingDown:       "server is shutting down",
	CodeFeatureMissing:     "server lacks a feature the mapping needs",
	CodeRegistryDown:       "the fleet's registry (etcd) is unreachable",
	CodeLocalUnreachable:   "local service unreachable",
	CodeMappingOffline:     "mapping offline",
}

// String returns the code's short English meaning.
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return "code " + strconv.Itoa(int(c))
}

// Fatal reports whether a client refused with c must stop instead of
// retrying (exit code 3): retrying cannot fix a bad token or a version the
// server does not speak.
func (c Code) Fatal() bool {
	return c == CodeBadToken || c == CodeUnsupportedVersion
}

// Retried reports whether a mapping refused with c is registered again
// while its session lives: a port in use may be freed, and a fleet's
// registry that did not answer may come back.
func (c Code) Retried() bool {
	return c == CodePortInUse || c == CodeRegistryDown
}

// RejectError is a refusal by the peer, carrying the wire code and reason.
type RejectError struct {
	Code   Code
	Reason string
}

// Error implements error.
func (e *RejectError) Error() string {
	if e.Reason == "" || e.Reason == e.Code.String() {
		return fmt.Sprintf("refused: %d %s", int(e.Code), e.Code)
	}
	return fmt.Sprintf("refused: %d %s: %s", int(e.Code), e.Code, e.Reason)
}

// CodeOf returns the wire code carried by err (a *RejectError or a codec
// error), or 0.
func CodeOf(err error) Code {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Code
	}
	if errors.Is(err, ErrFrameSize) || errors.Is(err, ErrMalformed) {
		return CodeMalformed
	}
	return 0
}
