package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/cmd/gotunnel-mux/admin"
	"github.com/gotunnel-mux/gotunnel-mux/config"
	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
)

const defaultClientFile = "client.toml"

// clientFlags are the client command's flags; quick mode is --server with
// no --config.
type clientFlags struct {
	config, token, ha string
	servers           []string
	maps              []config.Mapping
}

// clientSynopsis is the client's two ways to start, for its usage.
const clientSynopsis = `[--config client.toml]
       gotunnel-mux client --server HOST:PORT --token T --map [NAME=]REMOTE_PORT:LOCAL_ADDR[/udp][,OPTION=VALUE...] [--map ...]`

// parseClientFlags parses the client's flags. When done, the command
// stops with code (0 after --help).
func parseClientFlags(args []string, stderr io.Writer) (f *clientFlags, code int, done bool) {
	f = &clientFlags{}
	var specs []string // --map values, in order
	fs := newFlagSet("client", clientSynopsis, stderr)
	fs.StringVar(&f.config, "config", "", "client configuration file (TOML); default ./"+defaultClientFile+" unless --server is given")
	fs.Func("server", "server address: HOST:PORT, or tcp://, tls://, ws://HOST:PORT/PATH, wss://...; repeatable for several servers (overrides server_addr and server_addrs)", func(s string) error {
		f.servers = append(f.servers, s)
		return nil
	})
	fs.StringVar(&f.ha, "ha", "", `with several --server: "failover" (one at a time, in order; the default) or "all" (each at once) (overrides ha)`)
	fs.StringVar(&f.token, "token", "", "token (overrides token and GOTUNNEL_TOKEN)")
	fs.Func("map", "a mapping [NAME=]REMOTE_PORT:LOCAL_ADDR[/udp][,OPTION=VALUE...], repeatable (replaces the file's mappings);\nOPTIONs: allow=CIDR, deny=CIDR (each repeatable), bandwidth=SIZE, proxy=v1|v2, idle=DURATION (udp), health=true|false", func(s string) error {
		specs = append(specs, s)
		return nil
	})
	if code, done := parseFlags(fs, args); done {
		return nil, code, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "client: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return nil, exitUsage, true
	}
	// Parsed here rather than by the flag package, whose error would quote
	// the value a second time and print the whole usage after it.
	for _, s := range specs {
		m, err := config.ParseMap(s)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return nil, exitUsage, true
		}
		f.maps = append(f.maps, m)
	}
	return f, exitOK, false
}

// clientConfig builds the client configuration from the flags and, unless
// in quick mode, the file; flags override the file.
func (f *clientFlags) clientConfig() (*config.Client, error) {
	var cfg *config.Client
	if f.config == "" && len(f.servers) > 0 {
		c := config.DefaultClient()
		if tok, ok := os.LookupEnv("GOTUNNEL_TOKEN"); ok {
			c.Token = tok
		}
		cfg = &c
	} else {
		path := f.config
		if path == "" {
			path = defaultClientFile
		}
		var err error
		if cfg, err = config.LoadClient(path, os.LookupEnv); err != nil {
			if f.config == "" && errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%w\n%s", err, noClientFile)
			}
			return nil, err
		}
	}
	switch {
	case len(f.servers) == 1:
		cfg.ServerAddr, cfg.ServerAddrs = f.servers[0], nil
	case len(f.servers) > 1:
		cfg.ServerAddr, cfg.ServerAddrs = "", f.servers
	}
	if f.ha != "" {
		cfg.HA = f.ha
	}
	if f.token != "" {
		cfg.Token = f.token
	}
	if len(f.maps) > 0 {
		cfg.Mappings = f.maps
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// noClientFile tells a user without ./client.toml how to start.
const noClientFile = `gotunnel-mux client reads ./client.toml unless told otherwise. Start it with
  gotunnel-mux client --config /path/to/client.toml
or with no file at all:
  gotunnel-mux client --server HOST:PORT --token TOKEN --map REMOTE_PORT:LOCAL_ADDR
(docs/config.md lists every key; 'gotunnel-mux help' the commands)`

func runClient(args []string, stderr io.Writer) int {
	f, code, done := parseClientFlags(args, stderr)
	if done {
		return code
	}
	cfg, err := f.clientConfig()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	log, err := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	opts := clientOptions(cfg, log)
	if opts.TLS, err = clientTLS(cfg, log); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cfg.Path, err)
		return exitUsage
	}
	if opts.Proxy, err = clientProxy(cfg, os.LookupEnv); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	if opts.Proxy != nil {
		log.Info("connecting through a proxy", "proxy", opts.Proxy.Redacted())
	}
	if len(cfg.Mappings) == 0 {
		log.Warn("no mappings configured: the client will connect but expose nothing")
	}
	var cl *client.Client
	metrics := admin.NewClientMetrics(buildVersion(), func() client.Status { return cl.Status() })
	opts.Observer = metrics
	cl, err = client.New(opts)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	rl := &clientReloader{flags: f, cfg: cfg, cl: cl, log: log}
	stopAdmin, err := startAdmin(cfg.Path, cfg.Admin, admin.Options{
		Registry: metrics.Registry,
		Status:   func() any { return admin.NewClientDoc(buildVersion(), cl.Status()) },
		Ready:    cl.Ready,
		Reload:   rl.reload,
	}, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	defer stopAdmin()
	oneProc()
	stop := newStopper()
	defer stop.stop()
	hup := onSIGHUP(func() { _ = rl.reload() })
	defer hup()
	watchdog := startWatchdog(cl.Alive, log)
	defer watchdog()
	err = runUntilStopped(cl, stop, cfg.ShutdownTimeout.D(), log)
	var re *control.RejectError
	switch {
	case err == nil:
		log.Info("client stopped")
		return exitOK
	case errors.As(err, &re) && re.Code.Fatal():
		return exitRefused
	}
	log.Error("client stopped", "err", err)
	return exitFailure
}

// runUntilStopped runs cl until it fails or a signal: the first tells the
// server that no mapping takes new visitors and lets live ones finish for
// up to grace, a second one stops at once.
func runUntilStopped(cl *client.Client, stop *stopper, grace time.Duration, log *slog.Logger) error {
	ran := make(chan error, 1)
	go func() { ran <- cl.Run(context.Background()) }() // Shutdown ends it
	notifyReady("running; server " + cl.Status().Server)
	select {
	case err := <-ran:
		return err
	case <-stop.ctx.Done():
	}
	notifyStopping()
	log.Info("stopping; live visitors may finish", "grace", grace.String(), "visitors", cl.ActiveVisitors())
	if err := stop.graceful(grace, log, cl.Shutdown); err != nil {
		log.Warn("visitor connections cut off at stop", "err", err)
	}
	return <-ran
}

// clientReloader applies a changed file to a running client: SIGHUP and
// POST /api/v1/reload.
type clientReloader struct {
	flags *clientFlags
	log   *slog.Logger
	cl    *client.Client

	mu  sync.Mutex // one reload at a time; guards cfg
	cfg *config.Client
}

// reload re-reads the file and applies its mappings: added, removed and
// changed ones in the live session, the others untouched. A bad file
// changes nothing; the error names file, line and key. Any other key
// that changed is logged: it takes effect at the next start.
func (r *clientReloader) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	notifyReloading()
	defer notifyReloaded("running; server " + r.cfg.Endpoint().Host)
	if r.flags.config == "" && len(r.flags.servers) > 0 {
		err := errors.New("quick mode (--server, no --config): there is no file to reload")
		r.log.Warn("reload refused", "err", err)
		return err
	}
	cfg, err := r.flags.clientConfig()
	if err != nil {
		r.log.Error("reload refused; nothing changed", "err", err)
		return err
	}
	ch, err := r.cl.SetMappings(clientMappings(cfg))
	if err != nil {
		r.log.Error("reload refused; nothing changed", "err", err)
		return err
	}
	if keys := changedFields(*r.cfg, *cfg, "Mappings", "Path"); len(keys) > 0 {
		r.log.Warn("reload: only [[mappings]] change a running client; restart it for the rest", "keys", keys)
	}
	r.cfg = cfg
	r.log.Info("reloaded", "file", cfg.Path, "added", len(ch.Added), "removed", len(ch.Removed), "changed", len(ch.Changed))
	return nil
}

// changedFields names the top-level fields of two configurations (of one
// type) that differ, as Go field names, leaving out those in except.
func changedFields[T any](a, b T, except ...string) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var keys []string
	for i := range va.NumField() {
		name := va.Type().Field(i).Name
		if slices.Contains(except, name) {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			keys = append(keys, name)
		}
	}
	return keys
}

func clientMappings(cfg *config.Client) []client.Mapping {
	maps := make([]client.Mapping, len(cfg.Mappings))
	for i, m := range cfg.Mappings {
		maps[i] = client.Mapping{Name: m.Name, LocalAddr: m.LocalAddr, RemotePort: m.RemotePort, HealthCheck: *m.HealthCheck,
			ProxyProtocol: client.ProxyProtocol(m.ProxyProtocol), AllowIPs: m.AllowIPs, DenyIPs: m.DenyIPs,
			BandwidthLimit: int64(m.BandwidthLimit), UDP: m.Protocol == config.ProtocolUDP, UDPIdleTimeout: m.UDPIdleTimeout.D()}
	}
	return maps
}

func clientOptions(cfg *config.Client, log *slog.Logger) client.Options {
	maps := clientMappings(cfg)
	var servers []client.Endpoint
	for _, ep := range cfg.Servers() {
		scheme := ep.Scheme
		if scheme == transport.TCP && cfg.TLSEnabled() {
			scheme = transport.TLS
		}
		servers = append(servers, client.Endpoint{Addr: ep.Host, Transport: scheme, WSPath: ep.Path})
	}
	var more []client.Endpoint
	if len(servers) > 1 {
		more = servers[1:]
	}
	return client.Options{
		ServerAddr:        servers[0].Addr,
		Transport:         servers[0].Transport,
		WSPath:            servers[0].WSPath,
		MoreServers:       more,
		HA:                cfg.HA,
		Token:             cfg.Token,
		Name:              cfg.Name,
		Mappings:          maps,
		HeartbeatInterval: cfg.HeartbeatInterval.D(),
		HeartbeatTimeout:  cfg.HeartbeatTimeout.D(),
		DialTimeout:       cfg.DialTimeout.D(),
		HandshakeTimeout:  cfg.HandshakeTimeout.D(),
		ShutdownTimeout:   orNone(cfg.ShutdownTimeout.D()),
		Reconnect: client.ReconnectOptions{
			Min: cfg.Reconnect.Min.D(), Max: cfg.Reconnect.Max.D(), Factor: cfg.Reconnect.Factor,
			NoJitter: !cfg.Reconnect.Jitter, MaxRetries: cfg.Reconnect.MaxRetries,
		},
		Health: client.HealthOptions{
			Interval: cfg.Health.Interval.D(), Timeout: cfg.Health.Timeout.D(), Failures: cfg.Health.Failures,
		},
		Mux:        muxOptions(cfg.Mux, 0, log),
		BufferSize: int(cfg.Mux.BufferSize),
		AccessLog:  cfg.Log.Access,
		Logger:     log,
	}
}
