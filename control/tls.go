package control

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
)

// TLSError is a failed TLS handshake or certificate check (code 1010),
// with a hint in words a user can act on.
type TLSError struct {
	Hint string
	Err  error
}

// Error implements error.
func (e *TLSError) Error() string { return "tls: " + e.Hint + ": " + e.Err.Error() }

// Unwrap returns the underlying crypto/tls or x509 error.
func (e *TLSError) Unwrap() error { return e.Err }

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
		return remoteAlert(err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return &TLSError{"the server closed the connection during the TLS handshake; is [tls] set on the server?", err}
	}
	return nil
}

// remoteAlert explains an alert the server sent.
func remoteAlert(err error) *TLSError {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "certificate required"):
		return &TLSError{hintNoClientCert, err}
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate authority"),
		strings.Contains(msg, "certificate expired"), strings.Contains(msg, "certificate unknown"):
		return &TLSError{hintClientCertRefused, err}
	}
	return &TLSError{"the server ended the TLS handshake", err}
}

// certOffer records, during one TLS handshake, whether the server asked
// for a client certificate and whether this client offered one; it is
// written by the handshake and read after it, in the same goroutine.
type certOffer struct{ asked, offered bool }

// config returns cfg with a GetClientCertificate that records the offer
// and chooses as crypto/tls does without one: the first of Certificates
// the server accepts, else none.
func (o *certOffer) config(cfg *tls.Config) *tls.Config {
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

// loginFailure explains a login that failed over TLS. With TLS 1.3 the
// server refuses a client certificate after the client's side of the
// handshake is done: its alert ends the connection while the login is
// written or awaited. The write may fail (a broken pipe) before the alert
// is read, so when the server had asked for a certificate, a login cut off
// by the connection is taken for that refusal.
func (o *certOffer) loginFailure(err, readErr error, serverName string) error {
	var re *RejectError
	switch {
	case errors.As(err, &re):
		return err
	case readErr != nil && !errors.Is(readErr, io.EOF):
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

// First bytes that tell the transports apart on the server's one port.
const (
	firstTLS   = 0x16 // a TLS handshake record
	firstYamux = 0x00 // yamux protocol version 0
)

// prefixConn replays bytes already read from a connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

var _ net.Conn = (*prefixConn)(nil)

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// NetConn returns the wrapped connection (for socket options).
func (p *prefixConn) NetConn() net.Conn { return p.Conn }
