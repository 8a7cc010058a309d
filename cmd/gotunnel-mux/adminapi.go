package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"

	"github.com/gotunnel-mux/gotunnel-mux/cmd/gotunnel-mux/admin"
	"github.com/gotunnel-mux/gotunnel-mux/config"
)

// startAdmin starts the admin API when [admin] sets an address, with the
// endpoints o gives; stop closes it and waits for it. Without an address
// stop does nothing.
func startAdmin(path string, a config.Admin, o admin.Options, log *slog.Logger) (stop func(), err error) {
	if a.Addr == "" {
		return func() {}, nil
	}
	o.Addr, o.Token, o.Logger = a.Addr, a.Token, log
	if a.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: admin.cert_file, admin.key_file: %w", path, err)
		}
		o.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	srv, err := admin.Listen(o)
	if err != nil {
		return nil, fmt.Errorf("%s: admin.addr %q: %w", path, a.Addr, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(); err != nil {
			log.Error("admin api failed", "err", err)
		}
	})
	return func() {
		_ = srv.Close()
		wg.Wait()
	}, nil
}
