package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// selfSigned is a certificate for 127.0.0.1, and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// TestRemoteAlertsAreExplained: the server's refusal of a client's
// certificate is told by the alert's number (crypto/tls keeps the alert
// type unexported): in TLS 1.2 a certificate from an unknown CA gets
// unknown_ca during the handshake, in TLS 1.3 no certificate gets
// certificate_required, read after it. A Go release that changes that
// type fails here rather than in a user's log.
func TestRemoteAlertsAreExplained(t *testing.T) {
	cert, pool := selfSigned(t)
	stranger, _ := selfSigned(t)
	for _, tc := range []struct {
		name    string
		version uint16
		offer   []tls.Certificate
		want    string
	}{
		{"TLS 1.2, unknown CA", tls.VersionTLS12, []tls.Certificate{stranger}, hintClientCertRefused},
		{"TLS 1.3, none", tls.VersionTLS13, nil, hintNoClientCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
				Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
				MinVersion: tc.version, MaxVersion: tc.version,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan struct{})
			go func() {
				defer close(done)
				if c, err := ln.Accept(); err == nil {
					_ = c.(*tls.Conn).Handshake()
					_ = c.Close()
				}
			}()
			d := &Dialer{Transport: TLS, Addr: ln.Addr().String(), HandshakeTimeout: 5 * time.Second,
				TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MaxVersion: tc.version, Certificates: tc.offer}}
			conn, _, err := d.DialContext(context.Background())
			if err == nil { // TLS 1.3: the refusal comes after the client's side of the handshake
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				_ = conn.Close()
				if te := tlsFailure(err, "127.0.0.1"); te != nil {
					err = te
				}
			}
			<-done
			var te *TLSError
			if !errors.As(err, &te) || te.Hint != tc.want {
				t.Errorf("a client without a certificate got %v; want the hint %q", err, tc.want)
			}
		})
	}
}

// TestExplainNeedsAnOffer: without TLS there is nothing to explain, and a
// server that never asked for a certificate is not blamed for one.
func TestExplainNeedsAnOffer(t *testing.T) {
	cut := io.ErrUnexpectedEOF
	var none *CertOffer
	if got := none.Explain(cut, nil, "x"); got != cut {
		t.Errorf("nil offer: Explain = %v, want the error unchanged", got)
	}
	if got := (&CertOffer{}).Explain(cut, io.EOF, "x"); got != cut {
		t.Errorf("no certificate asked: Explain = %v, want the error unchanged", got)
	}
	var te *TLSError
	if got := (&CertOffer{asked: true}).Explain(cut, nil, "x"); !errors.As(got, &te) || te.Hint != hintNoClientCert {
		t.Errorf("asked, none offered: Explain = %v, want the no-certificate hint", got)
	}
	if got := (&CertOffer{asked: true, offered: true}).Explain(cut, nil, "x"); !errors.As(got, &te) || te.Hint != hintClientCertRefused {
		t.Errorf("asked and offered: Explain = %v, want the refused hint", got)
	}
}
