// Package fleet is the registry that the servers of a gotunnel-mux fleet
// share, in etcd: the live servers, which server holds each client name
// and which holds each public port (docs/architecture.md, "The fleet's
// registry"). It implements server.Fleet.
//
//	f, err := fleet.New(fleet.Options{Endpoints: eps, Name: "tunnel-a", PublicHost: "a.example.com", Logger: log})
//	srv := server.New(server.Options{..., Fleet: f})
//	defer f.Close() // after srv.Close: revokes the lease, so the names and ports are free at once
//
// Each server keeps its keys under one lease of its own, kept alive every
// third of its TTL: a server that dies frees its names and ports when the
// lease ends, and Close revokes it at once. While etcd does not answer,
// nothing live is touched; a claim waits up to RegistryTimeout and fails
// with server.ErrRegistryDown. When etcd answers again, every claim this
// server holds is written again (under a new lease if the old one ended);
// a name or a port that another server took meanwhile is given up.
//
// It does not choose the etcd endpoints, read files or decide what the
// server does with a lost claim: package main and package server do.
package fleet

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// DefaultPrefix is where the fleet's keys live in etcd.
const DefaultPrefix = "/gotunnel-mux/"

// MinLeaseTTL is the shortest lease etcd grants with its default
// election timeout; it raises a shorter one to about this.
const MinLeaseTTL = 2 * time.Second

// Options configure a Fleet. Zero fields take the defaults documented
// on each.
type Options struct {
	Endpoints          []string    // etcd's client URLs; required
	TLS                *tls.Config // nil: plain
	Username, Password string      // etcd's own authentication; "" none
	Name               string      // this server's name in the fleet; required, unique
	PublicHost         string      // the host visitors use for this server's ports; required
	BindAddr           string      // for the fleet's list of servers
	Version            string      // for the fleet's list of servers
	Prefix             string      // key prefix; default DefaultPrefix
	// LeaseTTL is how long the keys of a server that stopped renewing
	// them live on; whole seconds, at least MinLeaseTTL. Default 30s.
	LeaseTTL time.Duration
	// RegistryTimeout bounds how long a login or a registration waits
	// for etcd before it is refused (1014). Default 5s.
	RegistryTimeout time.Duration
	// Observer, when set, is told of each operation and of etcd's
	// reachability, for metrics.
	Observer Observer
	Logger   *slog.Logger // nil discards
}

// WithDefaults returns o with every zero field that has a default set.
func (o Options) WithDefaults() Options {
	o.Prefix = cmp.Or(o.Prefix, DefaultPrefix)
	if !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	o.LeaseTTL = max(cmp.Or(o.LeaseTTL, 30*time.Second).Round(time.Second), MinLeaseTTL)
	o.RegistryTimeout = cmp.Or(o.RegistryTimeout, 5*time.Second)
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	return o
}

// Observer is told what the registry does, for metrics; its methods must
// not block.
type Observer interface {
	// Operation is told of each operation: op is "claim_name",
	// "claim_port", "release" or "reassert"; result "ok", "held" (a port
	// held by another server, a name or port lost at a reassert) or
	// "failed" (etcd did not answer in time); d is how long it waited.
	Operation(op, result string, d time.Duration)
	// Reachable is told when etcd becomes reachable or unreachable.
	Reachable(up bool)
}

type nopObserver struct{}

func (nopObserver) Operation(string, string, time.Duration) {}
func (nopObserver) Reachable(bool)                          {}

// Fleet is one server's place in the fleet's registry.
type Fleet struct {
	// set in New
	opts   Options
	log    *slog.Logger
	cli    *clientv3.Client
	since  time.Time
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // leaseLoop, watchLoop, releaseLoop
	up     atomic.Bool    // etcd answered the last keepalive
	wake   chan struct{}  // the releaseLoop has work, or etcd is back (cap 1)
	renew  chan struct{}  // a claim found the lease gone (cap 1)

	mu       sync.Mutex // guards the fields below
	lease    clientv3.LeaseID
	leased   chan struct{}     // closed once lease is set; renewed when it is lost
	watchRev int64             // where watchLoop starts: after this server's record was written
	names    map[string]*claim // by key
	ports    map[string]*claim // by key
	pending  []release         // releases etcd has not taken yet
}

var _ server.Fleet = (*Fleet)(nil)

// New connects to etcd (in the background: it returns at once) and
// starts keeping this server's lease. The caller closes the Fleet.
func New(opts Options) (*Fleet, error) {
	opts = opts.WithDefaults()
	switch {
	case len(opts.Endpoints) == 0:
		return nil, errors.New("fleet: no etcd endpoints")
	case opts.Name == "", opts.PublicHost == "":
		return nil, errors.New("fleet: a name and a public host are required")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            opts.Endpoints,
		TLS:                  opts.TLS,
		Username:             opts.Username,
		Password:             opts.Password,
		DialTimeout:          opts.RegistryTimeout,
		DialKeepAliveTime:    opts.LeaseTTL / 3,
		DialKeepAliveTimeout: opts.LeaseTTL / 3,
		Logger:               zap.New(slogCore{log: opts.Logger}),
		// gRPC's own reconnect backoff grows to 2 minutes: an etcd back
		// after an outage would be seen that late. Retry within a third
		// of the lease (at most 5 s) instead.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: min(opts.LeaseTTL/3, 5*time.Second)},
			MinConnectTimeout: opts.RegistryTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: etcd client: %w", err)
	}
	f := &Fleet{opts: opts, log: opts.Logger, cli: cli, since: time.Now(),
		wake: make(chan struct{}, 1), renew: make(chan struct{}, 1),
		leased: make(chan struct{}), names: map[string]*claim{}, ports: map[string]*claim{}}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.wg.Go(f.leaseLoop)
	f.wg.Go(f.watchLoop)
	f.wg.Go(f.releaseLoop)
	return f, nil
}

// Close stops the loops and revokes the lease, so that every name and
// port this server held is free for the others at once (waiting up to
// RegistryTimeout for etcd; if it does not answer, they are free when
// the lease ends).
func (f *Fleet) Close() error {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	lease := f.lease
	f.mu.Unlock()
	if lease != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), f.opts.RegistryTimeout)
		_, err := f.cli.Revoke(ctx, lease)
		cancel()
		if err != nil {
			f.log.Warn("fleet: could not revoke the lease; this server's names and ports are free when it ends",
				"lease_ttl", f.opts.LeaseTTL.String(), "err", err)
		}
	}
	return f.cli.Close()
}

// PublicHost implements server.Fleet.
func (f *Fleet) PublicHost() string { return f.opts.PublicHost }

// Reachable reports whether etcd answered this server's last keepalive
// of the lease it holds.
func (f *Fleet) Reachable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up.Load() && f.lease != 0
}

// key is a key of the fleet's under the prefix.
func (f *Fleet) key(parts ...string) string { return f.opts.Prefix + strings.Join(parts, "/") }

func (f *Fleet) nameKey(name string) string { return f.key("names", name) }

func (f *Fleet) portKey(protocol string, port int) string {
	return f.key("ports", protocol, strconv.Itoa(port))
}

// The records stored at each key, JSON.
type (
	serverRecord struct {
		Name       string    `json:"name"`
		PublicHost string    `json:"public_host"`
		BindAddr   string    `json:"bind_addr,omitempty"`
		Version    string    `json:"version,omitempty"`
		Since      time.Time `json:"since"`
	}
	nameRecord struct {
		Server     string    `json:"server"`
		PublicHost string    `json:"public_host"`
		Session    string    `json:"session"`
		Since      time.Time `json:"since"`
	}
	portRecord struct {
		Server     string    `json:"server"`
		PublicHost string    `json:"public_host"`
		Client     string    `json:"client"`
		Mapping    string    `json:"mapping"`
		Since      time.Time `json:"since"`
	}
	// holderRecord is what every name and port record starts with.
	holderRecord struct {
		Server     string `json:"server"`
		PublicHost string `json:"public_host"`
		Client     string `json:"client"`
	}
)

func holderOf(value []byte) holderRecord {
	var h holderRecord
	_ = json.Unmarshal(value, &h) // a record that does not parse holds for no one
	return h
}

func (h holderRecord) holder() server.FleetHolder {
	return server.FleetHolder{Server: h.Server, PublicHost: h.PublicHost}
}

// claim is a name or a port this server holds.
type claim struct {
	f      *Fleet
	op     string // "claim_name" or "claim_port"
	key    string
	value  []byte
	client string // the client that holds it (a port's, for a takeover)
	lost   func(server.FleetHolder)
	once   sync.Once
	rev    int64 // ModRevision of our record; guarded by f.mu
}

// Release implements server.FleetClaim.
func (c *claim) Release() {
	c.once.Do(func() {
		f := c.f
		f.mu.Lock()
		m := f.mapOf(c)
		if m[c.key] == c {
			delete(m, c.key)
		}
		f.pending = append(f.pending, release{key: c.key, rev: c.rev})
		f.mu.Unlock()
		f.poke(f.wake)
	})
}

// mapOf is the map c belongs in; f.mu is held.
func (f *Fleet) mapOf(c *claim) map[string]*claim {
	if c.op == "claim_name" {
		return f.names
	}
	return f.ports
}

// lose gives c up: another server holds its key now.
func (c *claim) lose(by holderRecord) {
	c.f.mu.Lock()
	if m := c.f.mapOf(c); m[c.key] == c {
		delete(m, c.key)
	}
	c.f.mu.Unlock()
	c.once.Do(func() { c.lost(by.holder()) })
}

func (f *Fleet) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// ClaimName implements server.Fleet: the name's record is written
// unconditionally (a login takes a name over); the server that held it
// sees the write in its watchLoop and closes its session.
func (f *Fleet) ClaimName(ctx context.Context, name, session string, lost func(server.FleetHolder)) (server.FleetClaim, error) {
	value, _ := json.Marshal(nameRecord{Server: f.opts.Name, PublicHost: f.opts.PublicHost, Session: session, Since: time.Now().UTC()})
	c := &claim{f: f, op: "claim_name", key: f.nameKey(name), value: value, client: name, lost: lost}
	start := time.Now()
	err := f.withLease(ctx, func(ctx context.Context, lease clientv3.LeaseID) error {
		resp, err := f.cli.Put(ctx, c.key, string(value), clientv3.WithLease(lease))
		if err == nil {
			f.hold(c, resp.Header.Revision)
		}
		return err
	})
	return f.claimed(c, start, err)
}

// ClaimPort implements server.Fleet: the port's record is created only
// if there is none, in a transaction; one of this server's own that it
// no longer holds (a release etcd has not taken yet), or one of an older
// session of a client whose name this server holds now, is replaced.
func (f *Fleet) ClaimPort(ctx context.Context, protocol string, port int, client, mapping string, lost func(server.FleetHolder)) (server.FleetClaim, error) {
	value, _ := json.Marshal(portRecord{Server: f.opts.Name, PublicHost: f.opts.PublicHost, Client: client, Mapping: mapping, Since: time.Now().UTC()})
	c := &claim{f: f, op: "claim_port", key: f.portKey(protocol, port), value: value, client: client, lost: lost}
	start := time.Now()
	err := f.withLease(ctx, func(ctx context.Context, lease clientv3.LeaseID) error {
		return f.createPort(ctx, lease, c, protocol, port)
	})
	return f.claimed(c, start, err)
}

// createPort writes c's record if there is none, or replaces one that c
// may take over; else it fails with *server.PortHeldError.
func (f *Fleet) createPort(ctx context.Context, lease clientv3.LeaseID, c *claim, protocol string, port int) error {
	put := clientv3.OpPut(c.key, string(c.value), clientv3.WithLease(lease))
	cond := clientv3.Compare(clientv3.CreateRevision(c.key), "=", 0)
	for range 4 {
		resp, err := f.cli.Txn(ctx).If(cond).Then(put).Else(clientv3.OpGet(c.key)).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			f.hold(c, resp.Header.Revision)
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // deleted in between
		}
		kv := kvs[0]
		h := holderOf(kv.Value)
		if !f.mayTake(h, c.client, kv.ModRevision) {
			return &server.PortHeldError{Protocol: protocol, Port: port, By: h.holder()}
		}
		cond = clientv3.Compare(clientv3.ModRevision(c.key), "=", kv.ModRevision)
	}
	return &server.PortHeldError{Protocol: protocol, Port: port, By: server.FleetHolder{Server: "?"}}
}

// mayTake reports whether a port record of h, written at rev, may be
// replaced by a claim of client: it is this server's own and no longer
// held here, or the client's from before this server took its name.
func (f *Fleet) mayTake(h holderRecord, client string, rev int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h.Server == f.opts.Name {
		return true // not in f.ports: local binds are exclusive, so it is a release not yet taken
	}
	name := f.names[f.nameKey(client)]
	return h.Client == client && name != nil && name.rev > rev
}

// hold records c as held at rev.
func (f *Fleet) hold(c *claim, rev int64) {
	f.mu.Lock()
	c.rev = rev
	f.mapOf(c)[c.key] = c
	f.mu.Unlock()
}

// claimed reports a claim's outcome to the observer and the caller.
func (f *Fleet) claimed(c *claim, start time.Time, err error) (server.FleetClaim, error) {
	d := time.Since(start)
	var held *server.PortHeldError
	switch {
	case err == nil:
		f.opts.Observer.Operation(c.op, "ok", d)
		return c, nil
	case errors.As(err, &held):
		f.opts.Observer.Operation(c.op, "held", d)
		return nil, err
	}
	f.opts.Observer.Operation(c.op, "failed", d)
	f.log.Warn("fleet: etcd did not answer in time", "key", c.key, "waited", d.Round(time.Millisecond).String(), "err", err)
	return nil, fmt.Errorf("%w: %w", server.ErrRegistryDown, err)
}

// withLease runs op with the current lease, within RegistryTimeout; a
// lease that etcd no longer knows is renewed and op tried again.
func (f *Fleet) withLease(ctx context.Context, op func(context.Context, clientv3.LeaseID) error) error {
	ctx, cancel := context.WithTimeout(ctx, f.opts.RegistryTimeout)
	defer cancel()
	for {
		lease, err := f.currentLease(ctx)
		if err != nil {
			return err
		}
		err = op(ctx, lease)
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return err
		}
		f.leaseGone(lease)
	}
}

// currentLease waits until this server has a lease, or ctx ends.
func (f *Fleet) currentLease(ctx context.Context) (clientv3.LeaseID, error) {
	for {
		f.mu.Lock()
		lease, leased := f.lease, f.leased
		f.mu.Unlock()
		if lease != 0 {
			return lease, nil
		}
		select {
		case <-leased:
		case <-ctx.Done():
			return 0, fmt.Errorf("no lease: %w", context.Cause(ctx))
		}
	}
}

// leaseGone forgets lease, which etcd no longer has, and asks leaseLoop
// for a new one.
func (f *Fleet) leaseGone(lease clientv3.LeaseID) {
	f.mu.Lock()
	if f.lease == lease {
		f.lease = 0
		f.leased = make(chan struct{})
	}
	f.mu.Unlock()
	f.poke(f.renew)
}

// Status implements server.Fleet: one read of the whole prefix.
func (f *Fleet) Status(ctx context.Context) (server.FleetStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.RegistryTimeout)
	defer cancel()
	resp, err := f.cli.Get(ctx, f.opts.Prefix, clientv3.WithPrefix())
	if err != nil {
		return server.FleetStatus{}, fmt.Errorf("%w: %w", server.ErrRegistryDown, err)
	}
	var st server.FleetStatus
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), f.opts.Prefix), "/")
		switch {
		case len(parts) == 2 && parts[0] == "servers":
			var r serverRecord
			if json.Unmarshal(kv.Value, &r) == nil {
				st.Servers = append(st.Servers, server.FleetServer{Name: r.Name, PublicHost: r.PublicHost, BindAddr: r.BindAddr, Version: r.Version, Since: r.Since})
			}
		case len(parts) == 2 && parts[0] == "names":
			var r nameRecord
			if json.Unmarshal(kv.Value, &r) == nil {
				st.Clients = append(st.Clients, server.FleetName{Name: parts[1], Server: r.Server, Session: r.Session, Since: r.Since})
			}
		case len(parts) == 3 && parts[0] == "ports":
			var r portRecord
			port, perr := strconv.Atoi(parts[2])
			if perr == nil && json.Unmarshal(kv.Value, &r) == nil {
				st.Ports = append(st.Ports, server.FleetPort{Protocol: parts[1], Port: port, Server: r.Server, Client: r.Client, Mapping: r.Mapping, Since: r.Since})
			}
		}
	}
	slices.SortFunc(st.Ports, func(a, b server.FleetPort) int {
		return cmp.Or(strings.Compare(a.Protocol, b.Protocol), a.Port-b.Port)
	})
	return st, nil // servers and names come sorted by key
}
