package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"syscall"
)

// TLSError is a failed TLS handshake or certificate check, with a hint in
// words a user can act on.
type TLSError struct {
	Hint string
	Err  error
}

// Error implements error.
func (e *TLSError) Error() string { return "tls: " + e.Hint + ": " + e.Err.Error() }

// Unwrap returns the underlying crypto/tls or x509 error.
func (e *TLSError) Unwrap() error { return e.Err }

// ProxyError is a proxy that could not be reached (Unreachable) or
// refused to connect the client to the server. Reason carries the
// proxy's own answer.
type ProxyError struct {
	Unreachable bool
	Reason      string
	Err         error
}

// Error implements error.
func (e *ProxyError) Error() string {
	if e.Err == nil {
		return "proxy: " + e.Reason
	}
	return "proxy: " + e.Reason + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ProxyError) Unwrap() error { return e.Err }

// UpgradeError is a WebSocket handshake the server (or a reverse proxy in
// front of it) answered with something else than an upgrade; Status is
// the HTTP status, 0 when there was no answer.
type UpgradeError struct {
	Status int
	Hint   string
	Err    error
}

// Error implements error.
func (e *UpgradeError) Error() string { return e.Hint + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *UpgradeError) Unwrap() error { return e.Err }

// ErrTLSRequired is a server that requires TLS refusing a plain WebSocket
// upgrade (protocol.md 1.3).
var ErrTLSRequired = errors.New("transport: the server requires TLS for WebSocket; use a wss:// server_addr")

// The server's refusal of a plain WebSocket upgrade is told by a header,
// so that the client never has to read the words of the answer.
const (
	refusalHeader      = "Gotunnel-Refusal"
	refusalTLSRequired = "tls-required"
)

// tlsFailure explains a client-side TLS failure, or returns nil when err
// is not about TLS. serverName is the name the certificate was checked
// against.
func tlsFailure(err error, serverName string) *TLSError {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
		opErr    *net.OpError
	)
	switch {
	case errors.As(err, &unknown):
		return &TLSError{"the server's certificate is signed by an unknown authority; set [tls] ca_file to the CA that signed it", err}
	case errors.As(err, &hostname):
		return &TLSError{fmt.Sprintf("the server's certificate is not valid for %q; set [tls] server_name to a name it carries", serverName), err}
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return &TLSError{"the server's certificate has expired or is not valid yet; renew it, and check both clocks", err}
	case errors.As(err, &invalid):
		return &TLSError{"the server's certificate is not acceptable", err}
	case errors.As(err, &record):
		return &TLSError{"the server did not answer with TLS; is [tls] set on the server, and is server_addr its gotunnel-mux port?", err}
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return remoteAlert(opErr.Err, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return &TLSError{"the server closed the connection during the TLS handshake; is [tls] set on the server?", err}
	}
	return nil
}

// TLS alerts (RFC 8446 6.2) that say the server refused this client's
// certificate, or wanted one.
const (
	alertBadCertificate     = 42
	alertCertificateExpired = 45
	alertCertificateUnknown = 46
	alertUnknownCA          = 48
	alertCertificateReq     = 116
)

// remoteAlert explains an alert the server sent. crypto/tls reports it as
// a net.OpError "remote error" around its unexported alert type, a uint8:
// the alert's number is read from that, never from the error's words.
func remoteAlert(alert, err error) *TLSError {
	v := reflect.ValueOf(alert)
	if v.Kind() != reflect.Uint8 {
		return &TLSError{"the server ended the TLS handshake", err}
	}
	switch v.Uint() {
	case alertCertificateReq:
		return &TLSError{hintNoClientCert, err}
	case alertBadCertificate, alertUnknownCA, alertCertificateExpired, alertCertificateUnknown:
		return &TLSError{hintClientCertRefused, err}
	}
	return &TLSError{"the server ended the TLS handshake", err}
}

// CertOffer records, during one TLS handshake, whether the server asked
// for a client certificate and whether this client offered one; it is
// written by the handshake and read after it, in the same goroutine.
type CertOffer struct{ asked, offered bool }

// config returns cfg with a GetClientCertificate that records the offer
// and chooses as crypto/tls does without one: the first of Certificates
// the server accepts, else none.
func (o *CertOffer) config(cfg *tls.Config) *tls.Config {
	if cfg.GetClientCertificate != nil {
		return cfg
	}
	cfg = cfg.Clone()
	certs := cfg.Certificates
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		o.asked = true
		for i := range certs {
			if cri.SupportsCertificate(&certs[i]) == nil {
				o.offered = true
				return &certs[i], nil
			}
		}
		return new(tls.Certificate), nil
	}
	return cfg
}

// Explain explains a login that failed over TLS; err is the login's
// error, readErr the error that ended the connection's reads, if any.
// With TLS 1.3 the server refuses a client certificate after the client's
// side of the handshake is done: its alert ends the connection while the
// login is written or awaited. The write may fail (a broken pipe) before
// the alert is read, so when the server had asked for a certificate, a
// login cut off by the connection is taken for that refusal. A nil offer
// (no TLS) explains nothing. The caller leaves out errors that are the
// server's own answer.
func (o *CertOffer) Explain(err, readErr error, serverName string) error {
	if o == nil {
		return err
	}
	if readErr != nil && !errors.Is(readErr, io.EOF) {
		if te := tlsFailure(readErr, serverName); te != nil {
			return te
		}
	}
	switch {
	case o.asked && !o.offered:
		return &TLSError{hintNoClientCert, err}
	case o.asked:
		return &TLSError{hintClientCertRefused, err}
	}
	return err
}

// Hints for a server that refused this client's certificate, or wanted one.
const (
	hintNoClientCert      = "the server requires a client certificate signed by its client_ca_file; set [tls] cert_file and key_file (a certificate from another CA is not offered)"
	hintClientCertRefused = "the server refused this client's certificate; it must be signed by the server's client_ca_file and be valid"
)
