package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/cmd/gotunnel-mux/admin"
	"github.com/gotunnel-mux/gotunnel-mux/config"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"github.com/gotunnel-mux/gotunnel-mux/control/server/fleet"
)

// fleetOptions are [cluster]'s keys as the fleet's options; the TLS
// files are read by startFleet.
func fleetOptions(cl *config.Cluster, log *slog.Logger) fleet.Options {
	return fleet.Options{
		Endpoints:       cl.EtcdEndpoints,
		Username:        cl.Username,
		Password:        cl.Password,
		Name:            cl.Name,
		PublicHost:      cl.PublicHost,
		Prefix:          cl.Prefix,
		LeaseTTL:        cl.LeaseTTL.D(),
		RegistryTimeout: cl.RegistryTimeout.D(),
		Logger:          log,
	}
}

// etcdTLS is the TLS configuration for etcd's endpoints: nil when they
// are http://, else with [cluster]'s CA and client certificate.
func etcdTLS(cl *config.Cluster) (*tls.Config, error) {
	https := false
	for _, e := range cl.EtcdEndpoints {
		https = https || len(e) > 8 && (e[:8] == "https://" || e[:8] == "HTTPS://")
	}
	if !https {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cl.CAFile != "" {
		pem, err := os.ReadFile(cl.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.ca_file: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster.ca_file %s: no PEM certificate in it", cl.CAFile)
		}
	}
	if cl.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cl.CertFile, cl.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.cert_file, cluster.key_file: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// startFleet joins the fleet of [cluster], when the file has one: opts
// gets the Fleet, and the registry's metrics go in metrics' registry.
// stop revokes the lease; call it after the server has closed. An error
// is the file's (exit 2).
func startFleet(cfg *config.Server, opts *server.Options, bound string, metrics *admin.ServerMetrics, log *slog.Logger) (stop func(), err error) {
	if cfg.Cluster == nil {
		return func() {}, nil
	}
	fo := fleetOptions(cfg.Cluster, log)
	if fo.TLS, err = etcdTLS(cfg.Cluster); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	fo.BindAddr, fo.Version = bound, buildVersion()
	fo.Observer = admin.NewFleetMetrics(metrics.Registry)
	f, err := fleet.New(fo)
	if err != nil {
		return nil, fmt.Errorf("%s: [cluster]: %w", cfg.Path, err)
	}
	opts.Fleet = f
	log.Info("fleet: joining", "server", fo.Name, "public_host", fo.PublicHost, "etcd", fo.Endpoints)
	return func() { _ = f.Close() }, nil
}

// serverDoc is the server's status document, with the fleet read from
// etcd when the server is one of a fleet; an etcd that does not answer
// within 2 s leaves the fleet's section with the error.
func serverDoc(srv *server.Server) any {
	doc := admin.NewServerDoc(buildVersion(), srv.Status())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	fs, err := srv.FleetStatus(ctx)
	switch {
	case err != nil:
		doc.Fleet = &admin.FleetDoc{Error: errors.Unwrap(err).Error()}
	case fs != nil:
		doc.Fleet = admin.NewFleetDoc(*fs)
	}
	return doc
}
