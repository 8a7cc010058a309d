package client

import (
	"cmp"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
)

// Observer is told of events as they happen, for metrics. Its methods are
// called from the client's goroutines and must not block.
type Observer interface {
	// Login is told of each login answered: code 0 when the client logged
	// in, else the refusal's code.
	Login(code control.Code)
	// Reconnect is told of each new connection attempt after the first.
	Reconnect()
	// Refused is told of each refusal with a code that is not a login's:
	// a registration the server refused, a visitor this side refused
	// (local service unreachable, or the client stopping).
	Refused(code control.Code)
	// StreamOpened is told how long a data stream took from its arrival
	// to this side's ok: reading its header and dialling the local
	// service.
	StreamOpened(d time.Duration)
	// HeartbeatRTT is told of each heartbeat round trip: from the ping
	// queued to its pong read.
	HeartbeatRTT(d time.Duration)
}

// The states of a mapping in a Status.
const (
	StatePending  = "pending"  // not registered yet in this session, or no session
	StateUp       = "up"       // registered; visitors reach the local service
	StateOffline  = "offline"  // registered; the health probe finds the local service down
	StateDraining = "draining" // the client is stopping: no new visitors
	StateRefused  = "refused"  // the server refused it; Code and Reason say why
)

// Status is a snapshot of the client, for the admin API and metrics.
// With several servers, Session is the first server's with a live
// session, a mapping's state is its best over the servers (up before
// offline, draining, refused and pending), and Servers has each one's.
type Status struct {
	Started    time.Time
	Server     string         // the (first) server's address
	Session    *SessionStatus // nil while not logged in anywhere
	Reconnects int64          // connection attempts after the first, over every server
	LastError  string         // why the last session or attempt ended; "" before any
	Mappings   []MappingStatus
	// Servers are the servers, in the order given: one without HA.
	Servers []ServerStatus
}

// ServerStatus is one server of the client.
type ServerStatus struct {
	Addr       string
	Session    *SessionStatus // nil while not logged in there
	Reconnects int64          // attempts after the first
	LastError  string         // why its last session or attempt ended
	Mappings   []MappingState // each mapping's state there, in Status.Mappings' order
}

// MappingState is where a mapping stands on one server.
type MappingState struct {
	Name      string
	State     string       // one of the State constants
	BoundPort int          // the port the server bound in this session; 0 when not up
	Code      control.Code // the refusal, for StateRefused
	Reason    string
}

// stateRank orders the states for a mapping's best state over servers.
var stateRank = map[string]int{StateUp: 0, StateOffline: 1, StateDraining: 2, StateRefused: 3, StatePending: 4}

// SessionStatus is the live session.
type SessionStatus struct {
	Server       string // the server's address
	ID           string
	Since        time.Time
	Transport    string        // tcp, tls, ws or wss
	HeartbeatRTT time.Duration // the last round trip; 0 before the first pong
}

// MappingStatus is one mapping. The counters are since the client
// started, over every session.
type MappingStatus struct {
	Name       string
	LocalAddr  string
	RemotePort int          // as configured; 0: any
	BoundPort  int          // the port the server bound in this session; 0 when not up
	State      string       // one of the State constants
	Code       control.Code // the refusal, for StateRefused
	Reason     string
	Active     int64 // live visitor connections
	Visitors   int64 // visitor connections served
	BytesIn    int64 // from visitors
	BytesOut   int64 // to visitors
	// BandwidthLimit is the mapping's bandwidth_limit, bytes a second
	// each way; 0: none.
	BandwidthLimit int64
	// Protocol is "tcp" or "udp". A UDP mapping's visitors are its flows;
	// DatagramsDropped are the datagrams its service's sockets refused.
	Protocol         string
	DatagramsDropped int64
	// LimitWaitIn and LimitWaitOut are how long the bytes from and to
	// visitors were held back by BandwidthLimit on this side (the
	// client limits what it reads from the local service: out), summed
	// over the mapping's connections; 0 while it does not bite.
	LimitWaitIn, LimitWaitOut time.Duration
}

// counters are a mapping's figures over every session.
type counters struct {
	traffic  dataplane.Traffic
	visitors atomic.Int64
	active   atomic.Int64
	dropped  atomic.Int64 // a UDP mapping's datagrams dropped
}

// dropDatagram counts a UDP mapping's datagram dropped.
func (c *counters) dropDatagram() { c.dropped.Add(1) }

// Status returns a snapshot of the client.
func (c *Client) Status() Status {
	st := Status{Started: c.started, Server: c.links[0].addr}
	c.mapMu.RLock()
	defer c.mapMu.RUnlock()
	for _, l := range c.links {
		ss := ServerStatus{Addr: l.addr, Reconnects: l.reconnects.Load()}
		if p := l.lastErr.Load(); p != nil {
			ss.LastError = *p
		}
		cs := l.current()
		if cs != nil {
			ss.Session = &SessionStatus{Server: l.addr, ID: cs.id, Since: cs.since, Transport: l.transport,
				HeartbeatRTT: time.Duration(cs.rtt.Load())}
			if st.Session == nil {
				st.Session = ss.Session
			}
		} else if ss.LastError != "" && st.LastError == "" {
			st.LastError = ss.LastError
			if len(c.links) > 1 {
				st.LastError = l.addr + ": " + ss.LastError
			}
		}
		for _, m := range c.mappings {
			ss.Mappings = append(ss.Mappings, c.stateOn(cs, m))
		}
		st.Reconnects += ss.Reconnects
		st.Servers = append(st.Servers, ss)
	}
	for i, m := range c.mappings {
		ms := MappingStatus{Name: m.Name, LocalAddr: m.LocalAddr, RemotePort: m.RemotePort, State: StatePending,
			Active: m.counters.active.Load(), Visitors: m.counters.visitors.Load(),
			BytesIn: m.counters.traffic.AToB(), BytesOut: m.counters.traffic.BToA(), BandwidthLimit: m.BandwidthLimit,
			Protocol: m.protocol(), DatagramsDropped: m.counters.dropped.Load(),
			LimitWaitIn: m.counters.traffic.WaitAToB(), LimitWaitOut: m.counters.traffic.WaitBToA()}
		for _, ss := range st.Servers {
			if s := ss.Mappings[i]; stateRank[s.State] < stateRank[ms.State] {
				ms.State, ms.BoundPort, ms.Code, ms.Reason = s.State, s.BoundPort, s.Code, s.Reason
			}
		}
		st.Mappings = append(st.Mappings, ms)
	}
	return st
}

// stateOn is where m stands in cs (nil: no session). c.mapMu is held.
func (c *Client) stateOn(cs *clientSession, m *clientMapping) MappingState {
	ms := MappingState{Name: m.Name, State: StatePending}
	if cs == nil {
		return ms
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	r := cs.regs[m.Name]
	switch {
	case r == nil:
	case r.up && (c.stopped() || cs.retired()):
		ms.State, ms.BoundPort = StateDraining, r.port
	case r.up && !m.online.Load():
		ms.State, ms.BoundPort = StateOffline, r.port
	case r.up:
		ms.State, ms.BoundPort = StateUp, r.port
	case r.refusal != nil:
		ms.State, ms.Code, ms.Reason = StateRefused, r.refusal.Code, r.refusal.Reason
	}
	return ms
}

// Ready reports whether the client does all it can: logged in (with
// HAAll, to every server), and every mapping registered or refused for a
// reason that retrying cannot clear (anything but a port in use) in each
// of its sessions. Otherwise the error says what it waits for.
func (c *Client) Ready() error {
	st := c.Status()
	if st.Session == nil {
		if st.LastError != "" {
			return fmt.Errorf("not logged in to %s: %s", st.Server, st.LastError)
		}
		return fmt.Errorf("not logged in to %s yet", st.Server)
	}
	var errs []error
	for _, ss := range st.Servers {
		where := ""
		if len(st.Servers) > 1 {
			where = " on " + ss.Addr
		}
		if ss.Session == nil {
			if c.opts.HA == HAAll {
				errs = append(errs, fmt.Errorf("not logged in to %s: %s", ss.Addr, cmp.Or(ss.LastError, "not yet")))
			}
			continue
		}
		for _, m := range ss.Mappings {
			switch {
			case m.State == StatePending:
				errs = append(errs, fmt.Errorf("mapping %s: not registered yet%s", m.Name, where))
			case m.State == StateRefused && m.Code.Retried():
				errs = append(errs, fmt.Errorf("mapping %s: refused%s (%d %s), retrying", m.Name, where, int(m.Code), m.Reason))
			}
		}
	}
	return errors.Join(errs...)
}

// Alive reports whether the client's loops run: each session's
// heartbeat loop must have run lately. A client that is reconnecting is
// alive. For a supervisor's watchdog.
func (c *Client) Alive() error {
	for _, cs := range c.sessions() {
		last := cs.ticked.Load()
		if late := time.Since(time.Unix(0, last)); last != 0 && late > 3*cs.tick()+time.Second {
			return fmt.Errorf("client: the heartbeat loop of the session with %s has not run for %s", cs.link.addr, late.Round(time.Second))
		}
	}
	return nil
}

// pings remembers when the last few pings were queued, by their Time, so
// that a pong gives a round trip at the monotonic clock's precision.
type pings struct {
	mu   sync.Mutex
	sent [4]struct {
		time int64
		at   time.Time
	}
	next int
}

func (p *pings) add(t int64, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent[p.next].time, p.sent[p.next].at = t, at
	p.next = (p.next + 1) % len(p.sent)
}

// rtt is the round trip of the ping with Time t, or false for a pong no
// ping of ours asked for.
func (p *pings) rtt(t int64, now time.Time) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.sent {
		if s := &p.sent[i]; s.time == t && !s.at.IsZero() {
			d := now.Sub(s.at)
			s.at = time.Time{}
			return d, true
		}
	}
	return 0, false
}

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) Login(control.Code)         {}
func (nopObserver) Reconnect()                 {}
func (nopObserver) Refused(control.Code)       {}
func (nopObserver) StreamOpened(time.Duration) {}
func (nopObserver) HeartbeatRTT(time.Duration) {}
