package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
)

// ErrClosed is returned by Serve after Close or Shutdown.
var ErrClosed = errors.New("server: closed")

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi int }

// Contains reports whether p lies in r.
func (r PortRange) Contains(p int) bool { return p >= r.Lo && p <= r.Hi }

// Credential is a client with a token of its own ([[clients]]): a login
// with that token may use only Name, and only that token logs in as Name.
type Credential struct {
	Name        string
	TokenSHA256 [sha256.Size]byte
	AllowPorts  []PortRange // within Options.AllowPorts; empty: those
	MaxMappings int         // 0: Options.MaxMappingsPerClient
}

// DefaultUDPIdleTimeout is a UDP flow's idle timeout when the client's
// register names none.
const DefaultUDPIdleTimeout = 60 * time.Second

// Options configure a Server. Zero durations and limits take the
// defaults of docs/config.md.
type Options struct {
	Token                string       // the shared token; "" when every client has its own
	Clients              []Credential // clients with their own token
	PublicAddr           string       // host mapping listeners bind to; default "0.0.0.0"
	AllowPorts           []PortRange  // default 1024-65535
	MaxMappingsPerClient int          // default 16
	MaxConnsPerMapping   int          // 0: no limit
	// MaxUDPFlowsPerMapping bounds the live flows of a UDP mapping: a
	// datagram from a new visitor address beyond it is dropped and
	// counted as a reset. Default 1024.
	MaxUDPFlowsPerMapping int
	// MaxBandwidthPerClient is each client's limit in bytes a second, each
	// direction, over all its mappings and visitors, on top of each
	// mapping's own (register.bandwidth). 0: no limit.
	MaxBandwidthPerClient int64
	// AllowIPs and DenyIPs are the server-wide visitor lists, matched
	// before each mapping's own (register.allow_ips, deny_ips): a visitor
	// gets in when it passes both levels, deny beating allow at each, and
	// an empty allow list allowing all (docs/security.md). Default: none.
	AllowIPs               []netip.Prefix
	DenyIPs                []netip.Prefix
	LoginTimeout           time.Duration
	StreamOpenTimeout      time.Duration
	HeartbeatTimeout       time.Duration
	HeartbeatCheckInterval time.Duration
	// ShutdownTimeout is how long a visitor connection whose session died
	// may go on when its stream had finished: what is buffered for it is
	// still delivered (protocol.md 7.6). Default 10s; negative: none, the
	// visitor is reset. Shutdown's own grace is its context.
	ShutdownTimeout time.Duration
	// Guards against hostile peers; see docs/security.md.
	MaxUnauthenticated      int           // connections not logged in yet, at once; default 256
	MaxUnauthenticatedPerIP int           // the same from one address; default 32
	MaxFrameSize            int           // largest control frame accepted; default and at most MaxFrameSize
	BadLoginLimit           int           // wrong tokens from one address before a pause; default 5; negative: never pause
	BadLoginPause           time.Duration // default 1 minute
	// TLS, when set, is required of every client (with ClientAuth for
	// mTLS) unless AllowPlain; nil serves plain TCP.
	TLS        *tls.Config
	AllowPlain bool
	// WSPath is where HTTP clients upgrade to a WebSocket session; any
	// other HTTP request gets 404. Default DefaultWSPath.
	WSPath string
	// TrustedProxies are the addresses whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// AcceptProxyBind and AcceptProxyPublic: a connection from one of
	// TrustedProxies, on the Serve listeners (bind_addr) or on a mapping's
	// port, must start with a PROXY protocol header, v1 or v2, within
	// LoginTimeout of its accept; the address it names is then the peer
	// everywhere (limits, lists, logs, open_data_channel, status). A
	// missing or bad header resets the connection. From any other
	// address no header is read. Default: off (docs/security.md).
	AcceptProxyBind, AcceptProxyPublic bool
	// BufferSize is the relays' copy buffer, the largest data frame this
	// side writes; default dataplane.DefaultBufSize.
	BufferSize int
	// NoAccessLog puts the line logged per visitor connection (client,
	// mapping, visitor, bytes each way, duration, how it ended) at debug;
	// by default it is at info: the server's access log.
	NoAccessLog bool
	// Observer, when set, is told of logins, refusals, stream opens and
	// heartbeat round trips, for metrics.
	Observer Observer
	// Fleet, when set, is the registry this server shares with the other
	// servers of its fleet ([cluster]): client names and public ports are
	// held once across the fleet (cluster.go). Nil: a server alone.
	Fleet  Fleet
	Mux    mux.Options
	Logger *slog.Logger // nil discards
}

func (o *Options) setDefaults() {
	o.PublicAddr = cmp.Or(o.PublicAddr, "0.0.0.0")
	if len(o.AllowPorts) == 0 {
		o.AllowPorts = []PortRange{{1024, 65535}}
	}
	o.MaxMappingsPerClient = cmp.Or(o.MaxMappingsPerClient, 16)
	o.MaxUDPFlowsPerMapping = cmp.Or(o.MaxUDPFlowsPerMapping, 1024)
	o.LoginTimeout = cmp.Or(o.LoginTimeout, 10*time.Second)
	o.StreamOpenTimeout = cmp.Or(o.StreamOpenTimeout, 10*time.Second)
	o.HeartbeatTimeout = cmp.Or(o.HeartbeatTimeout, 30*time.Second)
	o.HeartbeatCheckInterval = cmp.Or(o.HeartbeatCheckInterval, 5*time.Second)
	o.ShutdownTimeout = cmp.Or(o.ShutdownTimeout, 10*time.Second)
	o.MaxUnauthenticated = cmp.Or(o.MaxUnauthenticated, 256)
	o.MaxUnauthenticatedPerIP = cmp.Or(o.MaxUnauthenticatedPerIP, 32)
	o.MaxFrameSize = min(cmp.Or(o.MaxFrameSize, control.MaxFrameSize), control.MaxFrameSize)
	o.BadLoginLimit = cmp.Or(o.BadLoginLimit, 5)
	o.BadLoginPause = cmp.Or(o.BadLoginPause, time.Minute)
	o.WSPath = cmp.Or(o.WSPath, transport.DefaultWSPath)
	o.BufferSize = cmp.Or(o.BufferSize, dataplane.DefaultBufSize)
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Mux.Logger == nil {
		o.Mux.Logger = o.Logger
	}
	o.Mux = o.Mux.WithDefaults()
}

// WithDefaults returns o with every zero field that has a default set to
// it, as New applies them (the Mux options too).
func (o Options) WithDefaults() Options {
	o.setDefaults()
	return o
}

// Server accepts client connections, logs clients in and serves their
// mappings. Its zero value is not usable: call New.
type Server struct {
	// set in New
	opts    Options
	log     *slog.Logger
	pol     atomic.Pointer[policy] // the token, ports and limits in force; SetPolicy replaces it
	reg     *registry
	guard   *guard
	bufs    *dataplane.Pool
	obs     Observer
	started time.Time
	tally   tally           // every mapping's counters
	bw      bandwidths      // max_bandwidth_per_client's limiters
	swept   atomic.Int64    // UnixNano of the sweep loop's last run, for Alive
	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // acceptLoops, handleConns, sweepLoop

	mu        sync.Mutex // guards listeners and sweeping
	listeners map[net.Listener]struct{}
	sweeping  bool

	entry *transport.Entry // first-byte sniffing, TLS and the WebSocket side
}

// New returns a server that is ready to Serve.
func New(opts Options) *Server {
	opts.setDefaults()
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		reg:       newRegistry(),
		bufs:      dataplane.NewPool(opts.BufferSize),
		obs:       opts.Observer,
		started:   time.Now(),
		listeners: make(map[net.Listener]struct{}),
	}
	s.entry = transport.NewEntry(transport.EntryOptions{
		TLS: opts.TLS, AllowPlain: opts.AllowPlain, WSPath: opts.WSPath, TrustedProxies: opts.TrustedProxies,
		HTTPTimeout: opts.LoginTimeout, Session: s.serveWebSocket, Paused: s.pausedRemote, Refused: s.upgradeRefused,
		Logger: opts.Logger,
	})
	s.pol.Store(newPolicy(&opts))
	s.guard = newGuard(&opts, s.entry.TrustedIP)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Serve accepts client connections on ln until Close or Shutdown, then
// returns ErrClosed. The Server owns ln. Serve may be called for
// several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	s.listeners[ln] = struct{}{}
	if !s.sweeping {
		s.sweeping = true
		s.wg.Go(s.sweepLoop)
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.log.Info("server listening", "addr", ln.Addr().String())
	return s.acceptLoop(ln)
}

func (s *Server) acceptLoop(ln net.Listener) error {
	for {
		c, err := dataplane.Accept(s.ctx, ln, func(err error, retryIn time.Duration) {
			s.log.Warn("accept client", "err", err, "retry_in", retryIn.String())
		})
		if err != nil {
			return ErrClosed
		}
		if !s.guard.admit(c) {
			_ = c.Close()
			continue
		}
		s.wg.Go(func() { s.handleConn(c) })
	}
}

// handleConn runs one client connection from accept to its end. It owns c.
func (s *Server) handleConn(c net.Conn) {
	deadline := time.Now().Add(s.opts.LoginTimeout)
	_ = c.SetDeadline(deadline)
	conn := c // c, or c as its PROXY header names it
	if s.opts.AcceptProxyBind {
		var ok bool
		if conn, ok = s.clientHeader(c); !ok {
			return
		}
	}
	a, err := s.entry.Handle(s.ctx, conn, deadline, func() { s.guard.release(c) })
	if err != nil {
		s.entryFailed(conn, err)
		return
	}
	var refusal *control.RejectError
	if a.TLSRequired {
		refusal = &control.RejectError{Code: control.CodeTLS, Reason: "this server requires TLS; use a tls:// or wss:// server_addr (or [tls] with a bare host:port)"}
	}
	sess, err := s.loginOver(a, refusal)
	a.Release()
	if err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	sess.run()
}

// entryFailed logs why the entry let c go; a connection handed to the
// HTTP side is not a failure, and one a load balancer made on its own (a
// health check that connects and closes) is logged at debug only.
func (s *Server) entryFailed(c net.Conn, err error) {
	var fb *transport.FirstByteError
	var he *transport.HandshakeError
	remote := c.RemoteAddr().String()
	pc, proxied := c.(*transport.ProxiedConn)
	switch {
	case errors.Is(err, transport.ErrHandedOff):
	case proxied && pc.Local():
		s.log.Debug("load balancer's own connection ended before login", "proxy", pc.Proxy().String(), "err", err)
	case errors.As(err, &he):
		s.log.Warn("tls handshake failed", "remote", remote, "code", int(control.CodeTLS), "err", he.Err)
	case errors.Is(err, transport.ErrTLSOnPlain):
		s.log.Warn("login failed: the client speaks TLS and this server has no [tls]", "remote", remote, "code", int(control.CodeTLS))
	case errors.As(err, &fb):
		s.log.Warn("login failed: not the gotunnel-mux protocol", "remote", remote, "code", int(control.CodeMalformed), "first_byte", int(fb.Byte))
	default:
		s.log.Warn("login failed", "remote", remote, "code", int(control.CodeLoginTimeout), "err", err)
	}
}

// loginOver runs the rest of the handshake on a's connection (TLS and
// WebSocket are done by now) until a's deadline: a yamux session, the
// control stream, a valid login frame and the reply; or, with a refusal,
// the refusal. On success the connection belongs to the returned session;
// on failure it is closed.
func (s *Server) loginOver(a *transport.Arrival, refusal *control.RejectError) (*serverSession, error) {
	c, deadline := a.Conn, a.Deadline
	remote := c.RemoteAddr().String()
	_ = c.SetDeadline(deadline)
	ms, err := mux.Server(c, s.opts.Mux)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()
	ctl, err := ms.AcceptControl(ctx)
	if err != nil {
		s.log.Warn("login failed", "remote", remote, "code", int(control.CodeLoginTimeout), "err", err)
		_ = ms.Close()
		return nil, err
	}
	if refusal != nil {
		s.log.Warn("login refused", "remote", remote, "code", int(refusal.Code), "reason", refusal.Reason)
		s.obs.Login(refusal.Code)
		s.refuse(ms, ctl, &control.ErrorMsg{Code: refusal.Code, Reason: refusal.Reason}, true)
		return nil, refusal
	}
	_ = ctl.SetDeadline(deadline)
	// A client that opens stray streams before it logs in is cut off at
	// once, not at login_timeout.
	stop := context.AfterFunc(ms.Context(), func() { _ = ms.Close() })
	login, cred, err := s.readLogin(ms, ctl, remote)
	stop()
	if err != nil {
		return nil, err
	}
	s.guard.goodLogin(ms.RemoteAddr())
	if s.ctx.Err() != nil || !s.reg.accepting() {
		s.log.Info("login refused: server shutting down", "remote", remote, "client", login.Name, "code", int(control.CodeShuttingDown))
		s.obs.Login(control.CodeShuttingDown)
		s.refuse(ms, ctl, &control.ErrorMsg{Code: control.CodeShuttingDown, Reason: control.CodeShuttingDown.String()}, true)
		return nil, errShuttingDown
	}
	sess := newServerSession(s, ms, ctl, login, a.Transport)
	sess.cred.Store(cred)
	if re := s.claimName(sess); re != nil {
		s.log.Warn("login refused: the fleet's registry is unreachable", "remote", remote, "client", login.Name, "code", int(re.Code))
		s.obs.Login(re.Code)
		s.refuse(ms, ctl, &control.LoginResp{Status: control.StatusFail, Code: re.Code, Reason: re.Reason}, true)
		return nil, re
	}
	ms.Trust()
	if err := control.WriteFrame(ctl, &control.LoginResp{Status: control.StatusOK, SessionID: sess.id,
		Features: []string{control.FeatureUnregister, control.FeatureVisitorACL, control.FeatureBandwidth, control.FeatureUDP}}); err != nil {
		sess.releaseName()
		_ = ms.Close()
		return nil, err
	}
	s.obs.Login(0)
	_ = c.SetDeadline(time.Time{})
	_ = ctl.SetDeadline(time.Time{})
	return sess, nil
}

// readLogin reads and checks the login frame; on failure it answers and
// closes the session.
func (s *Server) readLogin(ms *mux.Session, ctl *mux.Stream, remote string) (*control.Login, *Credential, error) {
	m, err := control.ReadFrameMax(ctl, s.opts.MaxFrameSize)
	if err != nil {
		code := control.CodeOf(err)
		switch {
		case errors.Is(context.Cause(ms.Context()), mux.ErrStrayStreams):
			code, err = control.CodeMalformed, mux.ErrStrayStreams
		case code == 0:
			code = control.CodeLoginTimeout
		}
		s.log.Warn("login failed", "remote", remote, "code", int(code), "err", err)
		s.obs.Login(code)
		s.refuse(ms, ctl, &control.ErrorMsg{Code: code, Reason: code.String()}, false)
		return nil, nil, err
	}
	login, ok := m.(*control.Login)
	if !ok {
		s.log.Warn("login failed", "remote", remote, "code", int(control.CodeMalformed), "err", "first frame is "+m.Type())
		s.obs.Login(control.CodeMalformed)
		s.refuse(ms, ctl, &control.ErrorMsg{Code: control.CodeMalformed, Reason: "first frame must be login"}, false)
		return nil, nil, control.ErrMalformed
	}
	cred, re := s.checkLogin(login)
	if re != nil {
		if re.Code == control.CodeBadToken {
			s.guard.badToken(ms.RemoteAddr())
		}
		s.log.Warn("login refused", "remote", remote, "client", login.Name, "code", int(re.Code), "reason", re.Reason)
		s.obs.Login(re.Code)
		s.refuse(ms, ctl, &control.LoginResp{Status: control.StatusFail, Code: re.Code, Reason: re.Reason}, true)
		return nil, nil, re
	}
	return login, cred, nil
}

// checkLogin returns the refusal for a login that must be refused, or
// the client's own credential (nil for the shared token).
func (s *Server) checkLogin(l *control.Login) (*Credential, *control.RejectError) {
	if l.Version != control.Version {
		return nil, &control.RejectError{Code: control.CodeUnsupportedVersion, Reason: fmt.Sprintf("server speaks version %d, client %d", control.Version, l.Version)}
	}
	return s.pol.Load().admit(l.Name, sha256.Sum256([]byte(l.Token)))
}

// refuse sends a last frame and closes the session. With linger, meant
// for a client that speaks the protocol but is refused (wrong token, plain
// on a TLS server), it first gives the client up to 2 s to read the frame
// and close, so that our close cannot turn into a reset that loses the
// frame; a peer sending garbage gets no such courtesy.
func (s *Server) refuse(ms *mux.Session, ctl *mux.Stream, last control.Message, linger bool) {
	_ = ctl.SetWriteDeadline(time.Now().Add(time.Second))
	if err := control.WriteFrame(ctl, last); err == nil && linger {
		_ = ctl.CloseWrite()
		t := time.NewTimer(2 * time.Second)
		select {
		case <-ms.Done():
		case <-t.C:
		case <-s.ctx.Done():
		}
		t.Stop()
	}
	_ = ms.Close()
}

// sweepLoop drops sessions from which nothing was read for
// heartbeat_timeout, forgets old bad-login records, and releases idle
// streams' receive buffers.
func (s *Server) sweepLoop() {
	t := time.NewTicker(s.opts.HeartbeatCheckInterval)
	defer t.Stop()
	var lastShrink time.Time
	s.swept.Store(time.Now().UnixNano())
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.swept.Store(now.UnixNano())
			s.guard.sweep(now)
			shrink := now.Sub(lastShrink) >= control.ShrinkEvery
			if shrink {
				lastShrink = now
			}
			for _, ss := range s.reg.sessions() {
				if idle := now.Sub(ss.mux.LastRead()); idle > s.opts.HeartbeatTimeout {
					ss.kill(fmt.Errorf("%w: nothing read for %s", control.ErrHeartbeatTimeout, idle.Round(time.Millisecond)))
				} else if shrink {
					ss.streams.Shrink()
				}
			}
		}
	}
}

// Sessions is the number of logged-in client sessions.
func (s *Server) Sessions() int { return len(s.reg.sessions()) }

// ActiveVisitors is the number of live visitor connections over every
// session and mapping.
func (s *Server) ActiveVisitors() int {
	n := 0
	for _, ss := range s.reg.sessions() {
		n += ss.activeVisitors()
	}
	return n
}

// Close stops accepting, closes every client session (their visitors are
// reset) and waits for every goroutine the server started.
func (s *Server) Close() error {
	s.mu.Lock()
	s.cancel()
	for ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()
	s.guard.close()
	_ = s.entry.Close()
	for _, ss := range s.reg.close() {
		ss.kill(ErrClosed)
	}
	s.wg.Wait() // WebSocket sessions too: no connection is added after this
	return nil
}

// Shutdown stops accepting clients and visitors (every port is freed at
// once), lets live visitor connections finish until ctx ends, then closes
// everything as Close does. From its start no login succeeds: a client
// still mid-handshake is answered 1012 and closed, and no session binds a
// port again. It returns ctx's error if it had to cut visitors off.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	for ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()
	s.entry.Drain()
	s.reg.drain()
	var wg sync.WaitGroup
	var cut atomic.Bool
	for _, ss := range s.reg.sessions() {
		for _, ln := range ss.listeners() {
			wg.Go(func() {
				if ln.Shutdown(ctx) != nil && ctx.Err() != nil {
					cut.Store(true)
				}
			})
		}
	}
	wg.Wait()
	_ = s.Close()
	if cut.Load() {
		return ctx.Err()
	}
	return nil
}
