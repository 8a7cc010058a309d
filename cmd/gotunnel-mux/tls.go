package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/config"
)

// serverTLS builds the server's TLS configuration: TLS 1.2 or later, the
// certificate from cert_file/key_file (reloaded when the files change or
// on SIGHUP), and client certificates required and checked against
// client_ca_file when it is set (mTLS).
func serverTLS(c *config.ServerTLS, log *slog.Logger) (*tls.Config, *certReloader, error) {
	r := &certReloader{certFile: c.CertFile, keyFile: c.KeyFile, log: log}
	if err := r.load(); err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.getCertificate}
	if c.ClientCAFile != "" {
		pool, err := loadPool(c.ClientCAFile)
		if err != nil {
			return nil, nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, r, nil
}

// clientTLS builds the client's TLS configuration, or nil when TLS is off
// (no [tls], or enabled = false, and a server_addr that is not tls:// or
// wss://). The server certificate is checked against ca_file (empty: the
// system roots) for server_name (empty: the host of server_addr, filled in
// by package control).
func clientTLS(cc *config.Client, log *slog.Logger) (*tls.Config, error) {
	if !cc.TLSEnabled() {
		return nil, nil
	}
	c := cc.TLS
	if c == nil {
		c = &config.ClientTLS{} // tls:// or wss:// without a [tls] table: the system roots
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("[tls] cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if c.InsecureSkipVerify {
		log.Warn("TLS server certificate NOT VERIFIED ([tls] insecure_skip_verify = true): anyone on the path can read and change the tunnel; set ca_file instead")
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

// certReloader serves the server certificate and loads it again when its
// files change (checked at most every few seconds, on a handshake) or on
// Reload (SIGHUP). A file that fails to load keeps the previous
// certificate in service.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex // guards the fields below
	cert    *tls.Certificate
	stamp   string // the files' sizes and modification times at load
	checked time.Time
}

const certCheckEvery = 5 * time.Second

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) > certCheckEvery {
		r.checked = time.Now()
		if st, err := r.fileStamp(); err == nil && st != r.stamp {
			r.reloadLocked("files changed")
		}
	}
	return r.cert, nil
}

// Reload loads the certificate again now.
func (r *certReloader) Reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloadLocked("SIGHUP")
}

func (r *certReloader) reloadLocked(why string) {
	if err := r.loadLocked(); err != nil {
		r.log.Error("TLS certificate reload failed; keeping the previous one", "reason", why, "err", err)
		return
	}
	r.log.Info("TLS certificate reloaded", "reason", why, "cert_file", r.certFile, "not_after", r.cert.Leaf.NotAfter.Format(time.RFC3339))
}

func (r *certReloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked()
}

func (r *certReloader) loadLocked() error {
	st, err := r.fileStamp()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("[tls] cert_file/key_file: %w", err)
	}
	if cert.Leaf == nil {
		return errors.New("[tls] cert_file: no certificate")
	}
	r.cert, r.stamp, r.checked = &cert, st, time.Now()
	return nil
}

func (r *certReloader) fileStamp() (string, error) {
	var s string
	for _, p := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}
