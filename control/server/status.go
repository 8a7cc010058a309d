package server

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"golang.org/x/time/rate"
)

// Observer is told of events as they happen, for metrics. Its methods are
// called from the server's goroutines and must not block.
type Observer interface {
	// Login is told of each login answered: code 0 when the client logged
	// in, else the refusal's code.
	Login(code control.Code)
	// Refused is told of each refusal with a code that is not a login's:
	// a registration refused, a visitor reset because its mapping was
	// offline, a visitor the client refused.
	Refused(code control.Code)
	// StreamOpened is told how long a visitor waited for its data stream,
	// from accept to the client's ok.
	StreamOpened(d time.Duration)
	// HeartbeatRTT is told of each round trip a client reports.
	HeartbeatRTT(d time.Duration)
}

// The states of a mapping in a Status.
const (
	StateUp       = "up"       // bound and serving visitors
	StateOffline  = "offline"  // bound; the client reports its local service down
	StateDraining = "draining" // bound; the client is stopping and takes no new visitors
	StateRefused  = "refused"  // the last registration was refused; Code and Reason say why
)

// Status is a snapshot of the server, for the admin API and metrics.
type Status struct {
	Started   time.Time
	Listening []string       // the addresses clients connect to
	Clients   []ClientStatus // by name
	// BadProxyHeaders is how many connections from trusted proxies to the
	// listeners clients connect to were reset for a missing or bad PROXY
	// protocol header (AcceptProxyBind).
	BadProxyHeaders int64
}

// ClientStatus is one logged-in client.
type ClientStatus struct {
	Name      string
	Remote    string // the client's address
	SessionID string
	Since     time.Time // the login
	Transport string    // tcp, tls, ws or wss
	// HeartbeatRTT is the round trip the client measured last; 0 until
	// it reports one.
	HeartbeatRTT time.Duration
	// the policy in force for it: max_bandwidth_per_client for its
	// visitor connections from now on (bytes a second; 0: none), whether
	// it logged in with a [[clients]] token of its own, and the mappings
	// it may register (its own max_mappings, or max_mappings_per_client)
	BandwidthLimit int64
	OwnToken       bool
	MaxMappings    int
	Mappings       []MappingStatus // by name
}

// MappingStatus is one mapping of a client. The counters are the
// mapping's (by client and mapping name) since the server started, over
// every session: they never go back, and they move as bytes flow.
type MappingStatus struct {
	Name       string
	RemotePort int // the bound port; for a refused mapping, the one asked for
	LocalAddr  string
	State      string       // StateUp, StateOffline, StateDraining or StateRefused
	Code       control.Code // the refusal, for StateRefused
	Reason     string
	Active     int   // live visitor connections
	Visitors   int64 // visitor connections served
	Resets     int64 // visitors reset at the door (offline, or max_conns_per_mapping)
	Denied     int64 // visitors reset at the door by allow_ips or deny_ips (the server's or the mapping's)
	// Protocol is "tcp" or "udp". A UDP mapping's visitors are its flows
	// (one per visitor address); DatagramsDropped are the datagrams it
	// dropped: too large, a flow's queue full, or refused by the client's
	// socket.
	Protocol         string
	DatagramsDropped int64
	// BadProxyHeaders is how many connections from trusted proxies were
	// reset for a missing or bad PROXY protocol header (AcceptProxyPublic;
	// TCP mappings only).
	BadProxyHeaders int64
	// BandwidthLimit is the mapping's own limit on what its visitors
	// send, bytes a second (register.bandwidth); 0: none.
	BandwidthLimit int64
	BytesIn        int64 // from visitors
	BytesOut       int64 // to visitors
	// LimitWaitIn and LimitWaitOut are how long the bytes from and to
	// its visitors were held back by a limit (its BandwidthLimit or the
	// client's max_bandwidth_per_client), summed over its connections:
	// 0 while no limit bites.
	LimitWaitIn, LimitWaitOut time.Duration
}

// counters are a mapping's figures that outlive its sessions.
type counters struct {
	traffic    dataplane.Traffic
	visitors   atomic.Int64
	resets     atomic.Int64
	denied     atomic.Int64
	dropped    atomic.Int64 // a UDP mapping's datagrams dropped
	badHeaders atomic.Int64 // reset for a missing or bad PROXY header
}

// dropDatagram counts a UDP mapping's datagram dropped.
func (c *counters) dropDatagram() { c.dropped.Add(1) }

// tally keeps the counters of every mapping seen, by client and mapping
// name, for the life of the server: a client that reconnects goes on
// counting where it stopped. It grows with the names seen, which the
// clients choose within max_mappings_per_client each.
type tally struct {
	mu sync.Mutex
	m  map[[2]string]*counters
}

func (t *tally) of(client, mapping string) *counters {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[[2]string]*counters)
	}
	k := [2]string{client, mapping}
	c := t.m[k]
	if c == nil {
		c = &counters{}
		t.m[k] = c
	}
	return c
}

// Status returns a snapshot of the server.
func (s *Server) Status() Status {
	st := Status{Started: s.started, BadProxyHeaders: s.guard.badHeaders()}
	s.mu.Lock()
	for ln := range s.listeners {
		st.Listening = append(st.Listening, ln.Addr().String())
	}
	s.mu.Unlock()
	slices.Sort(st.Listening)
	for _, ss := range s.reg.sessions() {
		st.Clients = append(st.Clients, ss.status())
	}
	slices.SortFunc(st.Clients, func(a, b ClientStatus) int { return cmp.Compare(a.Name, b.Name) })
	return st
}

func (ss *serverSession) status() ClientStatus {
	pol, cred := ss.srv.pol.Load(), ss.cred.Load()
	cs := ClientStatus{Name: ss.name, Remote: ss.remote, SessionID: ss.id, Since: ss.started, Transport: ss.transport,
		HeartbeatRTT:   time.Duration(ss.rtt.Load()) * time.Microsecond,
		BandwidthLimit: pol.MaxBandwidthPerClient, OwnToken: cred != nil, MaxMappings: pol.maxMappings(cred)}
	ss.mu.Lock()
	for _, m := range ss.mappings {
		state := StateUp
		switch {
		case m.draining.Load():
			state = StateDraining
		case !m.ln.Online():
			state = StateOffline
		}
		cs.Mappings = append(cs.Mappings, m.status(state, m.ln.Active()))
	}
	for name, r := range ss.refused {
		if ss.mappings[name] == nil {
			m := &mapping{name: name, port: r.port, localAddr: r.localAddr, udp: r.udp, counters: ss.srv.tally.of(ss.name, name)}
			ms := m.status(StateRefused, 0)
			ms.Code, ms.Reason = r.Code, r.Reason
			cs.Mappings = append(cs.Mappings, ms)
		}
	}
	ss.mu.Unlock()
	slices.SortFunc(cs.Mappings, func(a, b MappingStatus) int { return cmp.Compare(a.Name, b.Name) })
	return cs
}

func (m *mapping) status(state string, active int) MappingStatus {
	proto := control.ProtocolTCP
	if m.udp {
		proto = control.ProtocolUDP
	}
	return MappingStatus{Name: m.name, RemotePort: m.port, LocalAddr: m.localAddr, State: state, Active: active,
		Protocol: proto, DatagramsDropped: m.counters.dropped.Load(),
		Visitors: m.counters.visitors.Load(), Resets: m.counters.resets.Load(),
		Denied: m.counters.denied.Load(), BadProxyHeaders: m.counters.badHeaders.Load(), BandwidthLimit: limitOf(m.bandwidth),
		BytesIn: m.counters.traffic.AToB(), BytesOut: m.counters.traffic.BToA(),
		LimitWaitIn: m.counters.traffic.WaitAToB(), LimitWaitOut: m.counters.traffic.WaitBToA()}
}

// limitOf is l's rate in bytes a second; 0 for no limiter.
func limitOf(l *rate.Limiter) int64 {
	if l == nil {
		return 0
	}
	return int64(l.Limit())
}

// Alive reports whether the server's periodic loop (the heartbeat sweep)
// runs: a process whose loop stopped is wedged, and a supervisor's
// watchdog should restart it. Nil before Serve.
func (s *Server) Alive() error {
	last := s.swept.Load()
	if last == 0 {
		return nil
	}
	if late := time.Since(time.Unix(0, last)); late > 3*s.opts.HeartbeatCheckInterval+time.Second {
		return fmt.Errorf("server: the heartbeat sweep has not run for %s", late.Round(time.Second))
	}
	return nil
}

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) Login(control.Code)         {}
func (nopObserver) Refused(control.Code)       {}
func (nopObserver) StreamOpened(time.Duration) {}
func (nopObserver) HeartbeatRTT(time.Duration) {}

// Policy is what a running server can change without a restart
// (SetPolicy): who may log in and what a client may bind. Zero fields
// take Options' defaults.
type Policy struct {
	Token                string
	Clients              []Credential
	AllowPorts           []PortRange
	MaxMappingsPerClient int
	MaxConnsPerMapping   int // for mappings bound from now on
	// MaxUDPFlowsPerMapping is for UDP mappings bound from now on
	MaxUDPFlowsPerMapping int
	// MaxBandwidthPerClient is for visitor connections from now on; the
	// live ones keep the limit they started with (Options)
	MaxBandwidthPerClient int64
	// the server-wide visitor lists, for every visitor from now on,
	// on every mapping (Options)
	AllowIPs []netip.Prefix
	DenyIPs  []netip.Prefix
	// the guard's limits, for connections from now on (Options)
	MaxUnauthenticated      int
	MaxUnauthenticatedPerIP int
	BadLoginLimit           int
	BadLoginPause           time.Duration
}

// policy is a Policy in force, with the shared token's hash.
type policy struct {
	Policy
	tokenSum [sha256.Size]byte
	named    map[string]*Credential
	visitors ipLists // AllowIPs and DenyIPs
}

func newPolicy(o *Options) *policy {
	p := &policy{Policy: Policy{Token: o.Token, Clients: o.Clients, AllowPorts: o.AllowPorts,
		MaxMappingsPerClient: o.MaxMappingsPerClient, MaxConnsPerMapping: o.MaxConnsPerMapping,
		MaxUDPFlowsPerMapping: o.MaxUDPFlowsPerMapping, MaxBandwidthPerClient: o.MaxBandwidthPerClient, AllowIPs: o.AllowIPs, DenyIPs: o.DenyIPs},
		tokenSum: sha256.Sum256([]byte(o.Token)), named: make(map[string]*Credential, len(o.Clients)),
		visitors: ipLists{allow: o.AllowIPs, deny: o.DenyIPs}}
	for i := range o.Clients {
		p.named[o.Clients[i].Name] = &o.Clients[i]
	}
	return p
}

// admit checks a login's name and token hash: a client's own token logs
// in as that client only, and a name with its own token takes no other;
// the shared token (when set) logs in as any other name. It returns the
// client's credential (nil for the shared token), or the refusal (1002,
// in words). Every comparison is made, in constant time, whatever
// matches.
func (p *policy) admit(name string, sum [sha256.Size]byte) (*Credential, *control.RejectError) {
	var own *Credential
	for i := range p.Clients {
		if subtle.ConstantTimeCompare(sum[:], p.Clients[i].TokenSHA256[:]) == 1 {
			own = &p.Clients[i]
		}
	}
	shared := p.Token != "" && subtle.ConstantTimeCompare(sum[:], p.tokenSum[:]) == 1
	switch {
	case own != nil && own.Name != name:
		return nil, &control.RejectError{Code: control.CodeBadToken, Reason: fmt.Sprintf("this token is not valid for the name %q", name)}
	case own != nil:
		return own, nil
	case shared && p.named[name] != nil:
		return nil, &control.RejectError{Code: control.CodeBadToken, Reason: fmt.Sprintf("the name %q has a token of its own", name)}
	case shared:
		return nil, nil
	}
	return nil, &control.RejectError{Code: control.CodeBadToken, Reason: control.CodeBadToken.String()}
}

// ports and maxMappings are what a client with credential c may bind.
func (p *policy) ports(c *Credential) []PortRange {
	if c == nil || len(c.AllowPorts) == 0 {
		return p.AllowPorts
	}
	return intersect(p.AllowPorts, c.AllowPorts)
}

func (p *policy) maxMappings(c *Credential) int {
	if c != nil && c.MaxMappings > 0 {
		return c.MaxMappings
	}
	return p.MaxMappingsPerClient
}

// intersect is the ranges in both a and b.
func intersect(a, b []PortRange) []PortRange {
	var out []PortRange
	for _, x := range a {
		for _, y := range b {
			if lo, hi := max(x.Lo, y.Lo), min(x.Hi, y.Hi); lo <= hi {
				out = append(out, PortRange{lo, hi})
			}
		}
	}
	return out
}

// SetPolicy puts p in force at once: logins are checked against its
// token, registrations against its ports and limits, new connections
// against its guard limits, new visitors of every mapping against its
// visitor lists. A live session that
// logged in with a token that is no longer valid ends with 1002; a live
// mapping whose port is no longer allowed is closed (its visitors reset)
// and the client is told with a register_resp refusing it (1003). It
// returns once both are done.
func (s *Server) SetPolicy(p Policy) {
	o := s.opts
	o.Token, o.Clients = p.Token, p.Clients
	o.AllowPorts, o.MaxMappingsPerClient, o.MaxConnsPerMapping = p.AllowPorts, p.MaxMappingsPerClient, p.MaxConnsPerMapping
	o.MaxUnauthenticated, o.MaxUnauthenticatedPerIP = p.MaxUnauthenticated, p.MaxUnauthenticatedPerIP
	o.BadLoginLimit, o.BadLoginPause = p.BadLoginLimit, p.BadLoginPause
	o.AllowIPs, o.DenyIPs = p.AllowIPs, p.DenyIPs
	o.MaxBandwidthPerClient = p.MaxBandwidthPerClient
	o.MaxUDPFlowsPerMapping = p.MaxUDPFlowsPerMapping
	o.setDefaults()
	pol := newPolicy(&o)
	s.pol.Store(pol)
	s.guard.setLimits(&o)
	var wg sync.WaitGroup
	for _, ss := range s.reg.sessions() {
		cred, re := pol.admit(ss.name, ss.tokenSum)
		if re != nil {
			wg.Go(func() {
				ss.log.Warn("client session ended: its token is no longer valid", "code", int(control.CodeBadToken), "reason", re.Reason)
				ss.sendError(control.CodeBadToken, "the server's token changed: "+re.Reason)
				ss.kill(errTokenChanged)
			})
			continue
		}
		ss.cred.Store(cred)
		wg.Go(func() { ss.revokeDisallowed(pol) })
	}
	wg.Wait()
}

// errTokenChanged ends a session whose token a reload made invalid.
var errTokenChanged = errors.New("the server's token changed")

// revokeDisallowed closes the session's mappings whose port pol no
// longer allows, and tells the client.
func (ss *serverSession) revokeDisallowed(pol *policy) {
	ports := pol.ports(ss.cred.Load())
	ss.mu.Lock()
	var gone []*mapping
	for name, m := range ss.mappings {
		if !allowed(ports, m.port) {
			gone = append(gone, m)
			delete(ss.mappings, name)
		}
	}
	ss.mu.Unlock()
	for _, m := range gone {
		_ = m.ln.Close()
		m.releasePort()
		reason := fmt.Sprintf("port %d is outside allow_ports (changed on the server)", m.port)
		ss.log.Warn("mapping closed: its port is no longer allowed", "mapping", m.name, "remote_port", m.port,
			"code", int(control.CodePortNotAllowed))
		ss.srv.obs.Refused(control.CodePortNotAllowed)
		ss.refusedBefore(&control.Register{Name: m.name, RemotePort: m.port, LocalAddr: m.localAddr},
			&control.RejectError{Code: control.CodePortNotAllowed, Reason: reason})
		ss.w.TrySend(&control.RegisterResp{Status: control.StatusFail, Code: control.CodePortNotAllowed, Reason: reason,
			Name: m.name, RemotePort: m.port})
	}
}
