package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
	"golang.org/x/time/rate"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// Mapping is one local service to expose on the server.
type Mapping struct {
	Name       string // unique per client, [A-Za-z0-9._-]{1,64}
	LocalAddr  string // host:port the client dials for each visitor
	RemotePort int    // 0: the server picks one from its allow_ports
	// HealthCheck probes LocalAddr and reports the mapping offline and
	// online. A config file's health_check defaults to true; in code a
	// mapping is probed only when asked, since a probe is a connection to
	// the service that its owner may not expect.
	HealthCheck bool
	// ProxyProtocol, when set, starts each connection to LocalAddr with a
	// PROXY protocol header naming the visitor (see ProxyProtocol); off
	// by default.
	ProxyProtocol ProxyProtocol
	// AllowIPs and DenyIPs are the visitors the server lets through to
	// this mapping: one in no DenyIPs prefix and, when AllowIPs is not
	// empty, in one of its prefixes. The server's own lists apply too
	// and win (docs/security.md). A mapping with either list is
	// registered only with a server that enforces them (it names
	// control.FeatureVisitorACL); an older server would let every visitor
	// in, so towards it the mapping is refused here with 1013.
	AllowIPs []netip.Prefix
	DenyIPs  []netip.Prefix
	// BandwidthLimit is the mapping's limit in bytes a second, each
	// direction, shared by all its visitors; 0: none, else at least
	// control.MinBandwidth. The client limits the bytes it reads from
	// LocalAddr; the server, when it names control.FeatureBandwidth, the
	// bytes its visitors send. Towards an older server only the first
	// direction is limited, and a warning says so.
	BandwidthLimit int64
	// UDP makes this a UDP mapping: the server serves datagrams on its
	// UDP port RemotePort, one flow (a data stream) per visitor address,
	// and the client relays each flow through a UDP socket of its own
	// connected to LocalAddr (protocol.md 7.8). It is registered only
	// with a server that names control.FeatureUDP; towards an older one
	// it is refused here with 1013. HealthCheck does not apply.
	UDP bool
	// UDPIdleTimeout ends a UDP flow after this long without a datagram
	// either way; 0: the server's default, 60s.
	UDPIdleTimeout time.Duration
}

// checkUDP refuses what a UDP mapping cannot have: a health check (a UDP
// service cannot be probed), a PROXY v1 header (it has no UDP form) and
// an idle timeout out of range; and an idle timeout on a TCP mapping.
func (m *Mapping) checkUDP() error {
	switch {
	case !m.UDP && m.UDPIdleTimeout != 0:
		return errors.New("a UDP idle timeout on a TCP mapping")
	case !m.UDP:
		return nil
	case m.HealthCheck:
		return errors.New("a UDP service cannot be health-checked")
	case m.ProxyProtocol == ProxyProtocolV1:
		return errors.New("PROXY protocol v1 has no UDP form; use v2")
	case m.UDPIdleTimeout < 0 || m.UDPIdleTimeout > control.MaxUDPIdleTimeout*time.Millisecond:
		return fmt.Errorf("UDP idle timeout %s, want 0 (the server's default) to 24h", m.UDPIdleTimeout)
	case m.UDPIdleTimeout > 0 && m.UDPIdleTimeout < time.Millisecond:
		return fmt.Errorf("UDP idle timeout %s, want at least 1ms", m.UDPIdleTimeout)
	}
	return nil
}

// protocol is m's register.protocol.
func (m *Mapping) protocol() string {
	if m.UDP {
		return control.ProtocolUDP
	}
	return control.ProtocolTCP
}

// hasLists reports whether m restricts its visitors.
func (m *Mapping) hasLists() bool { return len(m.AllowIPs)+len(m.DenyIPs) > 0 }

// sameMapping reports whether a and b are the same mapping, lists and
// all.
func sameMapping(a, b Mapping) bool {
	return a.Name == b.Name && a.LocalAddr == b.LocalAddr && a.RemotePort == b.RemotePort &&
		a.HealthCheck == b.HealthCheck && a.ProxyProtocol == b.ProxyProtocol && slices.Equal(a.AllowIPs, b.AllowIPs) && slices.Equal(a.DenyIPs, b.DenyIPs) &&
		a.BandwidthLimit == b.BandwidthLimit && a.UDP == b.UDP && a.UDPIdleTimeout == b.UDPIdleTimeout
}

// ReconnectOptions shape the wait between connection attempts.
type ReconnectOptions struct {
	Min, Max time.Duration // default 1s, 16s
	Factor   float64       // default 2
	// NoJitter makes every wait exact; by default each is randomised, so
	// that clients cut off together do not come back in lock-step.
	NoJitter   bool
	MaxRetries int // 0: forever
}

// HealthOptions shape the local service probe.
type HealthOptions struct {
	Interval time.Duration // default 30s
	Timeout  time.Duration // default 3s
	Failures int           // consecutive failures before offline; default 3
}

// Options configure a Client. Zero durations take the defaults of
// docs/config.md.
type Options struct {
	ServerAddr string // host:port; required
	Transport  string // transport.TCP (default), transport.TLS, transport.WS or transport.WSS
	WSPath     string // the server's WebSocket path, for ws and wss; default transport.DefaultWSPath
	// Proxy, when set, is an http:// (HTTP CONNECT, basic auth from its
	// user) or socks5:// proxy every connection to the server goes through.
	// The environment is package main's business, not this one's.
	Proxy *url.URL
	// MoreServers are servers besides ServerAddr, for HA (each with its
	// own transport; Proxy, TLS and the timeouts are shared).
	MoreServers []Endpoint
	// HA is how the client uses several servers: HAFailover (the default)
	// or HAAll. With one server it does not matter.
	HA                string
	Token             string // required
	Name              string // required; the client's identity on the server
	Mappings          []Mapping
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	DialTimeout       time.Duration // to the server and to local services
	HandshakeTimeout  time.Duration // login reply, and each register reply
	// ShutdownTimeout is how long a visitor connection whose session died
	// may go on when its stream had finished: what is buffered for the
	// local service is still delivered (protocol.md 7.6). Default 10s;
	// negative: none. Shutdown's own grace is its context.
	ShutdownTimeout time.Duration
	Reconnect       ReconnectOptions
	Health          HealthOptions
	Mux             mux.Options
	Logger          *slog.Logger // nil discards
	// Dial opens the TCP connection to the server; nil dials directly or
	// through Proxy, within DialTimeout.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// TLS runs TLS over the dialled connection, within HandshakeTimeout;
	// required for TransportTLS and TransportWSS, and it makes a plain
	// "tcp" transport TLS. An empty ServerName is the host of ServerAddr.
	TLS *tls.Config
	// BufferSize is the relays' copy buffer, the largest data frame this
	// side writes; default dataplane.DefaultBufSize.
	BufferSize int
	// OnEvent, when set, is called for session and mapping changes, in
	// order, from the client's goroutines; it must not block.
	OnEvent func(Event)
	// Observer, when set, is told of logins, reconnects, refusals, stream
	// opens and heartbeat round trips, for metrics.
	Observer Observer
	// AccessLog logs a line per visitor connection at info; off, the line
	// is at debug.
	AccessLog bool
}

func (o *Options) setDefaults() {
	o.HeartbeatInterval = cmp.Or(o.HeartbeatInterval, 10*time.Second)
	o.HeartbeatTimeout = cmp.Or(o.HeartbeatTimeout, 30*time.Second)
	o.DialTimeout = cmp.Or(o.DialTimeout, 5*time.Second)
	o.HandshakeTimeout = cmp.Or(o.HandshakeTimeout, 10*time.Second)
	o.ShutdownTimeout = cmp.Or(o.ShutdownTimeout, 10*time.Second)
	o.Reconnect.Min = cmp.Or(o.Reconnect.Min, time.Second)
	o.Reconnect.Max = cmp.Or(o.Reconnect.Max, 16*time.Second)
	o.Reconnect.Factor = cmp.Or(o.Reconnect.Factor, 2)
	o.Health.Interval = cmp.Or(o.Health.Interval, 30*time.Second)
	o.Health.Timeout = cmp.Or(o.Health.Timeout, 3*time.Second)
	o.Health.Failures = cmp.Or(o.Health.Failures, 3)
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Mux.Logger == nil {
		o.Mux.Logger = o.Logger
	}
	o.Transport = cmp.Or(o.Transport, transport.TCP)
	o.BufferSize = cmp.Or(o.BufferSize, dataplane.DefaultBufSize)
	o.WSPath = cmp.Or(o.WSPath, transport.DefaultWSPath)
	o.Mux = o.Mux.WithDefaults()
}

// WithDefaults returns o with every zero field that has a default set to
// it, as New applies them (the Mux options too).
func (o Options) WithDefaults() Options {
	o.setDefaults()
	return o
}

// EventKind tells what an Event reports.
type EventKind int

// The kinds of Event.
const (
	EventSessionUp      EventKind = iota + 1 // logged in
	EventSessionDown                         // the session ended; Err says why
	EventMappingUp                           // registered; RemotePort is the bound port
	EventMappingFailed                       // registration refused; Err is a *RejectError
	EventMappingOffline                      // the local service stopped answering
	EventMappingOnline                       // the local service answers again
)

// Event is a change in the client's state, for status displays and tests.
type Event struct {
	Kind       EventKind
	Server     string // the server's host:port, for the session events and the mapping's up or failed
	Mapping    string
	RemotePort int
	Err        error
}

// Client keeps a session to the server alive (or to several servers, as
// Options.HA says) and serves its mappings.
type Client struct {
	// set in New
	opts     Options
	log      *slog.Logger
	id       string
	links    []*link // ServerAddr first, then MoreServers
	running  atomic.Bool
	bufs     *dataplane.Pool
	stopping context.Context    // ended by Shutdown: drain, then do not reconnect
	stop     context.CancelFunc // ends stopping
	runDone  chan struct{}      // closed when Run returns
	live     atomic.Int64       // data streams being set up or relayed, over all sessions
	wg       sync.WaitGroup     // relays of ended sessions (finishRelays); joined by Run
	obs      Observer
	started  time.Time

	mu     sync.Mutex         // guards hard and runCtx
	hard   context.CancelFunc // ends Run at once; set by Run
	runCtx context.Context    // Run's, for the probes SetMappings starts; nil once Run is ending

	// The mappings: SetMappings replaces the slice and the map (never
	// changing them in place) and applies the change to the current
	// session while it holds mapMu. Lock order: mapMu, then a session's mu.
	mapMu    sync.RWMutex
	mappings []*clientMapping
	byName   map[string]*clientMapping
	reloadMu sync.Mutex     // one SetMappings at a time
	probes   sync.WaitGroup // probe loops; joined by Run
}

// clientMapping is a Mapping with its probe state, which outlives sessions.
type clientMapping struct {
	Mapping
	online atomic.Bool
	// "local service unreachable": failures since the last line, and the
	// line's rate
	dialFails atomic.Int64
	dialWarn  rate.Sometimes
	counters  *counters     // for Status, over every session (and a change by SetMappings)
	bandwidth *rate.Limiter // BandwidthLimit on the bytes read from LocalAddr, shared by all visitors; nil: none

	stopProbe context.CancelFunc // ends its probe loop; set when the loop starts
	cut       context.Context    // ends when a removed mapping's visitors must stop: their relays abort
	cutNow    context.CancelFunc
}

// newMapping is m with fresh state; counters carries over those of the
// mapping m replaces (nil: new ones).
func newMapping(m Mapping, cnt *counters) *clientMapping {
	if cnt == nil {
		cnt = &counters{}
	}
	cm := &clientMapping{Mapping: m, dialWarn: rate.Sometimes{Interval: 10 * time.Second}, counters: cnt,
		bandwidth: dataplane.NewLimiter(m.BandwidthLimit)}
	cm.online.Store(true)
	cm.cut, cm.cutNow = context.WithCancel(context.Background())
	return cm
}

// New checks opts and returns a client ready to Run.
func New(opts Options) (*Client, error) {
	opts.setDefaults()
	switch {
	case opts.Token == "":
		return nil, errors.New("client: empty token")
	case !control.ValidName(opts.Name):
		return nil, fmt.Errorf("client: name %q: want 1-64 of [A-Za-z0-9._-]", opts.Name)
	case opts.HA != "" && opts.HA != HAFailover && opts.HA != HAAll:
		return nil, fmt.Errorf("client: ha %q: want %q or %q", opts.HA, HAFailover, HAAll)
	}
	c := &Client{opts: opts, log: opts.Logger, id: control.NewID(), byName: make(map[string]*clientMapping),
		bufs: dataplane.NewPool(opts.BufferSize), runDone: make(chan struct{}), obs: opts.Observer, started: time.Now()}
	seen := map[string]bool{}
	for _, e := range append([]Endpoint{{Addr: opts.ServerAddr, Transport: opts.Transport, WSPath: opts.WSPath}}, opts.MoreServers...) {
		if seen[e.Addr] {
			return nil, fmt.Errorf("client: server %s is given twice", e.Addr)
		}
		seen[e.Addr] = true
		l, err := newLink(c, e)
		if err != nil {
			return nil, err
		}
		c.links = append(c.links, l)
	}
	c.stopping, c.stop = context.WithCancel(context.Background())
	if err := checkMappings(opts.Mappings); err != nil {
		return nil, err
	}
	for _, m := range opts.Mappings {
		cm := newMapping(m, nil)
		c.mappings = append(c.mappings, cm)
		c.byName[m.Name] = cm
	}
	return c, nil
}

// Run connects, logs in, registers every mapping and serves visitors,
// reconnecting with backoff whenever the session ends, until ctx ends
// (nil: a stop at once, live visitors are reset), Shutdown has drained
// (nil), the server refuses for a reason retrying cannot fix (a
// *RejectError whose Code is Fatal), or reconnect.max_retries attempts in a
// row fail. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("client: already ran")
	}
	defer close(c.runDone)
	ctx, hard := context.WithCancel(ctx)
	c.mapMu.RLock()
	c.mu.Lock()
	c.hard, c.runCtx = hard, ctx
	for _, m := range c.mappings {
		c.startProbeLocked(m)
	}
	c.mu.Unlock()
	c.mapMu.RUnlock()
	defer func() {
		if c.stopped() {
			c.wg.Wait() // a graceful stop lets the last relays finish, within shutdown_timeout
		}
		hard()
		c.mu.Lock()
		c.runCtx = nil // no probe starts after this
		c.mu.Unlock()
		c.probes.Wait()
		c.wg.Wait()
	}()
	switch {
	case len(c.links) == 1:
		return c.links[0].reconnectLoop(ctx)
	case c.opts.HA == HAAll:
		return c.runAll(ctx)
	}
	return c.runFailover(ctx)
}

// stopped reports whether Shutdown has begun.
func (c *Client) stopped() bool { return c.stopping.Err() != nil }

// Shutdown stops the client gracefully: the server is told that no mapping
// takes new visitors (they are refused at once, as for a mapping whose
// local service is down), live visitor connections go on until they end
// or ctx ends, then the session is closed and Run returns nil. It returns
// ctx's error if it had to cut visitors off (they are reset), and returns
// once Run has returned, if Run was running.
func (c *Client) Shutdown(ctx context.Context) error {
	c.stop()
	err := pollUntil(ctx, 20*time.Millisecond, func() bool { return c.live.Load() == 0 })
	c.mu.Lock()
	hard := c.hard
	c.mu.Unlock()
	if hard == nil {
		return err
	}
	hard()
	<-c.runDone
	return err
}

// ActiveVisitors is the number of data streams being set up or relayed,
// over every session.
func (c *Client) ActiveVisitors() int { return int(c.live.Load()) }

// spread keeps clients from coming back in lock-step after a long outage:
// with jitter, jpillora/backoff caps most waits at exactly Max once the
// outage is long, so a capped wait is drawn again from [Max/2, Max].
func spread(wait time.Duration, r ReconnectOptions) time.Duration {
	if r.NoJitter || wait < r.Max || r.Max < 2 {
		return wait
	}
	return r.Max/2 + rand.N(r.Max-r.Max/2)
}

// connectCode is the code logged for a failed or ended attempt.
func connectCode(err error) control.Code {
	if code := control.CodeOf(err); code != 0 {
		return code
	}
	var (
		te *transport.TLSError
		pe *transport.ProxyError
	)
	switch {
	case errors.As(err, &te):
		return control.CodeTLS
	case errors.As(err, &pe) && !pe.Unreachable:
		return control.CodeProxyRefused
	}
	return control.CodeCannotReachServer
}

func (c *Client) emit(e Event) {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(e)
	}
}

// handshake logs in over conn under handshake_timeout. It owns conn: on
// failure conn is closed, on success it belongs to the session.
func (c *Client) handshake(ctx context.Context, l *link, conn net.Conn, offer *transport.CertOffer) (*clientSession, error) {
	deadline := time.Now().Add(c.opts.HandshakeTimeout)
	_ = conn.SetDeadline(deadline)
	ms, err := mux.Client(conn, c.opts.Mux)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	resp, err := c.login(ms, deadline)
	var re *control.RejectError
	switch {
	case err == nil:
		c.obs.Login(0)
	case errors.As(err, &re):
		c.obs.Login(re.Code)
	}
	if err != nil {
		if c.opts.TLS != nil && !errors.As(err, &re) {
			err = offer.Explain(err, ms.ReadErr(), l.tlsName)
		}
		_ = ms.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return newClientSession(ctx, c, l, ms, resp), nil
}

// login sends the login frame and reads the reply.
func (c *Client) login(ms *mux.Session, deadline time.Time) (*loginResult, error) {
	ctl, err := ms.OpenControl()
	if err != nil {
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	err = control.WriteFrame(ctl, &control.Login{Version: control.Version, Token: c.opts.Token, Name: c.opts.Name, ClientID: c.id})
	if err != nil {
		return nil, fmt.Errorf("send login: %w", err)
	}
	_ = ctl.SetReadDeadline(deadline)
	m, err := control.ReadFrame(ctl)
	if err != nil {
		return nil, fmt.Errorf("read login reply: %w", err)
	}
	_ = ctl.SetReadDeadline(time.Time{})
	switch m := m.(type) {
	case *control.LoginResp:
		if m.Status != control.StatusOK {
			return nil, &control.RejectError{Code: m.Code, Reason: m.Reason}
		}
		return &loginResult{ctl: ctl, sessionID: m.SessionID, features: m.Features}, nil
	case *control.ErrorMsg:
		return nil, &control.RejectError{Code: m.Code, Reason: m.Reason}
	}
	return nil, fmt.Errorf("%w: login answered with %s", control.ErrMalformed, m.Type())
}

type loginResult struct {
	ctl       *mux.Stream
	sessionID string
	features  []string
}

// pollUntil checks cond every interval until it holds (nil) or ctx ends
// (ctx's error).
func pollUntil(ctx context.Context, every time.Duration, cond func() bool) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// sleepCtx waits d or until ctx ends; false means ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
