package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/cmd/gotunnel-mux/admin"
	"github.com/gotunnel-mux/gotunnel-mux/config"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// minTokenLen is the length below which the server warns about its token.
const minTokenLen = 16

func runServer(args []string, stderr io.Writer) int {
	fs := newFlagSet("server", "--config server.toml", stderr)
	path := fs.String("config", "", "server configuration file (TOML)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: gotunnel-mux server --config server.toml")
		return exitUsage
	}
	cfg, err := config.LoadServer(*path, os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	log, level, err := newLeveledLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	if cfg.Token != "" && len(cfg.Token) < minTokenLen {
		log.Warn("the token is short and easy to guess; make one with 'gotunnel-mux token'", "length", len(cfg.Token), "recommended_min", minTokenLen)
	}
	for _, c := range cfg.Clients {
		if c.Token != "" && len(c.Token) < minTokenLen {
			log.Warn("a client's token is short and easy to guess; make one with 'gotunnel-mux token --hash'", "client", c.Name, "length", len(c.Token))
		}
	}
	opts := serverOptions(cfg, log)
	var certs *certReloader
	if cfg.TLS != nil {
		if opts.TLS, certs, err = serverTLS(cfg.TLS, log); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", cfg.Path, err)
			return exitUsage
		}
	}
	return serve(cfg, opts, certs, &serverReloader{cfg: cfg, certs: certs, level: level, log: log})
}

// serve runs the server until a signal: the first drains live visitors for
// up to shutdown_timeout, a second one stops at once.
func serve(cfg *config.Server, opts server.Options, certs *certReloader, rl *serverReloader) int {
	log := rl.log
	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		log.Error("cannot listen", "addr", cfg.BindAddr, "err", err)
		return exitFailure
	}
	var srv *server.Server
	metrics := admin.NewServerMetrics(buildVersion(), func() server.Status { return srv.Status() })
	opts.Observer = metrics
	stopFleet, err := startFleet(cfg, &opts, ln.Addr().String(), metrics, log) // cluster.go
	if err != nil {
		_ = ln.Close()
		log.Error("cannot join the fleet", "err", err)
		return exitUsage
	}
	defer stopFleet() // after the server has closed: revokes the lease
	srv = server.New(opts)
	var stopping atomic.Bool
	stopAdmin, err := startAdmin(cfg.Path, cfg.Admin, admin.Options{
		Registry: metrics.Registry,
		Status:   func() any { return serverDoc(srv) },
		Ready: func() error {
			if stopping.Load() {
				return errors.New("shutting down")
			}
			return nil
		},
	}, log)
	if err != nil {
		_ = ln.Close()
		log.Error("cannot start the admin api", "err", err)
		return exitUsage
	}
	defer stopAdmin()
	stop := newStopper()
	defer stop.stop()
	rl.srv = srv
	hup := onSIGHUP(func() {
		notifyReloading()
		defer notifyReloaded("serving on " + ln.Addr().String())
		rl.reload()
	})
	defer hup()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	notifyReady("serving on " + ln.Addr().String())
	watchdog := startWatchdog(srv.Alive, log)
	defer watchdog()
	select {
	case err := <-served:
		log.Error("server failed", "err", err)
		_ = srv.Close()
		return exitFailure
	case <-stop.ctx.Done():
	}
	notifyStopping()
	stopping.Store(true)
	grace := cfg.ShutdownTimeout.D()
	log.Info("shutting down; live visitors may finish", "grace", grace.String(), "visitors", srv.ActiveVisitors())
	if err := stop.graceful(grace, log, srv.Shutdown); err != nil {
		log.Warn("visitor connections cut off at shutdown", "err", err)
	}
	if err := <-served; !errors.Is(err, server.ErrClosed) {
		log.Warn("serve ended", "err", err)
	}
	log.Info("server stopped")
	return exitOK
}

// serverReloader applies a changed server file on SIGHUP.
type serverReloader struct {
	cfg   *config.Server // the file in force
	srv   *server.Server
	certs *certReloader // nil without [tls]
	level *slog.LevelVar
	log   *slog.Logger
}

// reloadable are the server fields a reload puts in force (Log: its
// level; TLS: the files again); any other that changed is named in a
// warning and waits for a restart. Limits holds the guard's limits, in
// force at once, and max_frame_size and max_stray_streams, which wait.
var reloadable = []string{"Token", "Clients", "AllowPorts", "MaxMappingsPerClient", "MaxConnsPerMapping", "MaxUDPFlowsPerMapping", "MaxBandwidthPerClient", "AllowIPs", "DenyIPs", "Limits", "Log", "TLS", "Path"}

// reload re-reads the file: the token, allow_ports, the mapping limits,
// max_bandwidth_per_client (for visitor connections from now on),
// the visitor lists (allow_ips, deny_ips: for the next visitor of every
// mapping) and the log level take effect at once (server.SetPolicy: sessions with a
// token no longer valid end with 1002, mappings on ports no longer
// allowed close with 1003), and the certificate and key are read again. A
// bad file changes nothing; the error names file, line and key.
func (r *serverReloader) reload() {
	cfg, err := config.LoadServer(r.cfg.Path, os.LookupEnv)
	if err != nil {
		r.log.Error("reload refused; nothing changed", "err", err)
		return
	}
	if (cfg.TLS == nil) != (r.cfg.TLS == nil) || cfg.TLS != nil && *cfg.TLS != *r.cfg.TLS {
		r.log.Warn("reload: [tls] was added, removed or names other files; restart the server for that", "file", cfg.Path)
	}
	o := serverOptions(cfg, r.log)
	r.srv.SetPolicy(server.Policy{Token: o.Token, Clients: o.Clients, AllowPorts: o.AllowPorts, MaxMappingsPerClient: o.MaxMappingsPerClient,
		MaxConnsPerMapping: o.MaxConnsPerMapping, MaxUDPFlowsPerMapping: o.MaxUDPFlowsPerMapping, MaxBandwidthPerClient: o.MaxBandwidthPerClient, AllowIPs: o.AllowIPs, DenyIPs: o.DenyIPs, MaxUnauthenticated: o.MaxUnauthenticated,
		MaxUnauthenticatedPerIP: o.MaxUnauthenticatedPerIP, BadLoginLimit: o.BadLoginLimit, BadLoginPause: o.BadLoginPause})
	_ = setLevel(r.level, cfg.Log.Level) // checked by LoadServer
	if r.certs != nil {
		r.certs.Reload()
	}
	if keys := changedFields(*r.cfg, *cfg, reloadable...); len(keys) > 0 {
		r.log.Warn("reload: these keys take effect at the next start", "keys", keys)
	}
	if cfg.MaxFrameSize != r.cfg.MaxFrameSize || cfg.MaxStrayStreams != r.cfg.MaxStrayStreams {
		r.log.Warn("reload: max_frame_size and max_stray_streams take effect at the next start")
	}
	if cfg.Log.Format != r.cfg.Log.Format || cfg.Log.Access != r.cfg.Log.Access {
		r.log.Warn("reload: [log] format and access take effect at the next start")
	}
	r.cfg = cfg
	r.log.Info("reloaded", "file", cfg.Path)
}

func serverOptions(cfg *config.Server, log *slog.Logger) server.Options {
	ranges := portRanges(cfg.AllowPorts)
	proxyBind, proxyPublic := cfg.AcceptsProxy()
	var clients []server.Credential
	for _, c := range cfg.Clients {
		clients = append(clients, server.Credential{Name: c.Name, TokenSHA256: c.TokenSum(), AllowPorts: portRanges(c.AllowPorts), MaxMappings: c.MaxMappings})
	}
	return server.Options{
		Token:                   cfg.Token,
		Clients:                 clients,
		PublicAddr:              cfg.PublicAddr,
		AllowPorts:              ranges,
		MaxMappingsPerClient:    cfg.MaxMappingsPerClient,
		MaxConnsPerMapping:      cfg.MaxConnsPerMapping,
		MaxUDPFlowsPerMapping:   cfg.MaxUDPFlowsPerMapping,
		MaxBandwidthPerClient:   int64(cfg.MaxBandwidthPerClient),
		AllowIPs:                cfg.AllowIPs,
		DenyIPs:                 cfg.DenyIPs,
		LoginTimeout:            cfg.LoginTimeout.D(),
		StreamOpenTimeout:       cfg.StreamOpenTimeout.D(),
		HeartbeatTimeout:        cfg.HeartbeatTimeout.D(),
		HeartbeatCheckInterval:  cfg.HeartbeatCheckInterval.D(),
		MaxUnauthenticated:      cfg.MaxUnauthenticated,
		MaxUnauthenticatedPerIP: cfg.MaxUnauthenticatedPerIP,
		MaxFrameSize:            int(cfg.MaxFrameSize),
		BadLoginLimit:           orNone(cfg.BadLoginLimit),
		BadLoginPause:           cfg.BadLoginPause.D(),
		WSPath:                  cfg.WSPath,
		AllowPlain:              cfg.AllowPlain,
		TrustedProxies:          cfg.TrustedProxies,
		AcceptProxyBind:         proxyBind,
		AcceptProxyPublic:       proxyPublic,
		ShutdownTimeout:         orNone(cfg.ShutdownTimeout.D()),
		BufferSize:              int(cfg.Mux.BufferSize),
		NoAccessLog:             !cfg.Log.Access,
		Mux:                     muxOptions(cfg.Mux, orNone(cfg.MaxStrayStreams), log),
		Logger:                  log,
	}
}

func portRanges(rs []config.PortRange) []server.PortRange {
	var out []server.PortRange
	for _, r := range rs {
		out = append(out, server.PortRange{Lo: r.Lo, Hi: r.Hi})
	}
	return out
}

// orNone is a file's "0: none" value (shutdown_timeout, bad_login_limit,
// max_stray_streams) as the engines' Options take it: there a zero field
// takes the default, and none is spelled negative.
func orNone[T int | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// muxOptions are the [mux] table's options, with the server's stray-stream
// limit (0 on the client, which has no such key: the default).
func muxOptions(m config.Mux, strays int, log *slog.Logger) mux.Options {
	return mux.Options{WindowSize: uint32(m.WindowSize), MaxStrayStreams: strays, Logger: log}
}
