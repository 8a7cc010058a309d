package control

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("control: server closed")

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi int }

// Contains reports whether p lies in r.
func (r PortRange) Contains(p int) bool { return p >= r.Lo && p <= r.Hi }

// ServerOptions configure a Server. Zero durations and limits take the
// defaults of docs/config.md.
type ServerOptions struct {
	Token                  string      // required
	PublicAddr             string      // host mapping listeners bind to; default "0.0.0.0"
	AllowPorts             []PortRange // default 1024-65535
	MaxMappingsPerClient   int         // default 16
	MaxConnsPerMapping     int         // 0: no limit
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
	BadLoginLimit           int           // wrong tokens from one address before a pause; 0: never pause
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
	// BufferSize is the relays' copy buffer, the largest data frame this
	// side writes; default dataplane.DefaultBufSize.
	BufferSize int
	Mux        mux.Options
	Logger     *slog.Logger // nil discards
}

func (o *ServerOptions) setDefaults() {
	o.PublicAddr = cmp.Or(o.PublicAddr, "0.0.0.0")
	if len(o.AllowPorts) == 0 {
		o.AllowPorts = []PortRange{{1024, 65535}}
	}
	o.MaxMappingsPerClient = cmp.Or(o.MaxMappingsPerClient, 16)
	o.LoginTimeout = cmp.Or(o.LoginTimeout, 10*time.Second)
	o.StreamOpenTimeout = cmp.Or(o.StreamOpenTimeout, 10*time.Second)
	o.HeartbeatTimeout = cmp.Or(o.HeartbeatTimeout, 30*time.Second)
	o.HeartbeatCheckInterval = cmp.Or(o.HeartbeatCheckInterval, 5*time.Second)
	o.ShutdownTimeout = cmp.Or(o.ShutdownTimeout, 10*time.Second)
	o.MaxUnauthenticated = cmp.Or(o.MaxUnauthenticated, 256)
	o.MaxUnauthenticatedPerIP = cmp.Or(o.MaxUnauthenticatedPerIP, 32)
	o.MaxFrameSize = min(cmp.Or(o.MaxFrameSize, MaxFrameSize), MaxFrameSize)
	o.BadLoginPause = cmp.Or(o.BadLoginPause, time.Minute)
	o.WSPath = cmp.Or(o.WSPath, DefaultWSPath)
	o.BufferSize = cmp.Or(o.BufferSize, dataplane.DefaultBufSize)
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	if o.Mux.Logger == nil {
		o.Mux.Logger = o.Logger
	}
}

// Server accepts client connections, logs clients in and serves their
// mappings. Its zero value is not usable: call NewServer.
type Server struct {
	// set in NewServer
	opts     ServerOptions
	log      *slog.Logger
	tokenSum [sha256.Size]byte
	reg      *registry
	guard    *guard
	bufs     *dataplane.Pool
	ctx      context.Context // ends at Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup // acceptLoops, handleConns, sweepLoop

	mu        sync.Mutex // guards listeners and sweeping
	listeners map[net.Listener]struct{}
	sweeping  bool

	httpOnce  sync.Once // starts the HTTP side: WebSocket upgrades
	httpQ     *connQueue
	httpSrv   *http.Server
	httpConns sync.WaitGroup // net/http's connection goroutines, until hijacked or closed
}

// NewServer returns a server that is ready to Serve.
func NewServer(opts ServerOptions) *Server {
	opts.setDefaults()
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		tokenSum:  sha256.Sum256([]byte(opts.Token)),
		reg:       newRegistry(),
		guard:     newGuard(&opts, nil),
		bufs:      dataplane.NewPool(opts.BufferSize),
		listeners: make(map[net.Listener]struct{}),
	}
	s.guard.trusted = s.trusted
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Serve accepts client connections on ln until Close or Shutdown, then
// returns ErrServerClosed. The Server owns ln. Serve may be called for
// several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.startHTTP(ln.Addr())
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
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept client", "err", err, "retry_in", delay.String())
			if !sleepCtx(s.ctx, delay) {
				return ErrServerClosed
			}
			continue
		}
		delay = 0
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
	conn, refusal, err := s.secure(c, deadline)
	if err != nil {
		s.guard.release(c)
		return
	}
	if h, ok := conn.(*handoff); ok {
		if !s.httpQ.push(h) {
			_ = h.Close()
		}
		return
	}
	sess, err := s.loginOver(conn, deadline, refusal)
	s.guard.release(c)
	if err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	sess.run()
}

// loginOver runs the rest of the handshake on c (TLS and WebSocket are done
// by now) until deadline: a yamux session, the control stream, a valid
// login frame and the reply; or, with a refusal, the refusal. On success
// the connection belongs to the returned session; on failure it is closed.
func (s *Server) loginOver(c net.Conn, deadline time.Time, refusal *RejectError) (*serverSession, error) {
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
		s.log.Warn("login failed", "remote", remote, "code", int(CodeLoginTimeout), "err", err)
		_ = ms.Close()
		return nil, err
	}
	if refusal != nil {
		s.log.Warn("login refused", "remote", remote, "code", int(refusal.Code), "reason", refusal.Reason)
		s.refuse(ms, ctl, &ErrorMsg{Code: refusal.Code, Reason: refusal.Reason}, true)
		return nil, refusal
	}
	_ = ctl.SetDeadline(deadline)
	// A client that opens stray streams before it logs in is cut off at
	// once, not at login_timeout.
	stop := context.AfterFunc(ms.Context(), func() { _ = ms.Close() })
	login, err := s.readLogin(ms, ctl, remote)
	stop()
	if err != nil {
		return nil, err
	}
	s.guard.goodLogin(ms.RemoteAddr())
	if s.ctx.Err() != nil || !s.reg.accepting() {
		s.log.Info("login refused: server shutting down", "remote", remote, "client", login.Name, "code", int(CodeShuttingDown))
		s.refuse(ms, ctl, &ErrorMsg{Code: CodeShuttingDown, Reason: CodeShuttingDown.String()}, true)
		return nil, errShuttingDown
	}
	ms.Trust()
	sess := newServerSession(s, ms, ctl, login)
	if err := WriteFrame(ctl, &LoginResp{Status: StatusOK, SessionID: sess.id}); err != nil {
		_ = ms.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	_ = ctl.SetDeadline(time.Time{})
	return sess, nil
}

// readLogin reads and checks the login frame; on failure it answers and
// closes the session.
func (s *Server) readLogin(ms *mux.Session, ctl *mux.Stream, remote string) (*Login, error) {
	m, err := ReadFrameMax(ctl, s.opts.MaxFrameSize)
	if err != nil {
		code := CodeOf(err)
		switch {
		case errors.Is(context.Cause(ms.Context()), mux.ErrStrayStreams):
			code, err = CodeMalformed, mux.ErrStrayStreams
		case code == 0:
			code = CodeLoginTimeout
		}
		s.log.Warn("login failed", "remote", remote, "code", int(code), "err", err)
		s.refuse(ms, ctl, &ErrorMsg{Code: code, Reason: code.String()}, false)
		return nil, err
	}
	login, ok := m.(*Login)
	if !ok {
		s.log.Warn("login failed", "remote", remote, "code", int(CodeMalformed), "err", "first frame is "+m.Type())
		s.refuse(ms, ctl, &ErrorMsg{Code: CodeMalformed, Reason: "first frame must be login"}, false)
		return nil, ErrMalformed
	}
	if re := s.checkLogin(login); re != nil {
		if re.Code == CodeBadToken {
			s.guard.badToken(ms.RemoteAddr())
		}
		s.log.Warn("login refused", "remote", remote, "client", login.Name, "code", int(re.Code), "reason", re.Reason)
		s.refuse(ms, ctl, &LoginResp{Status: StatusFail, Code: re.Code, Reason: re.Reason}, true)
		return nil, re
	}
	return login, nil
}

// secure reads the connection's first byte to tell yamux, TLS and HTTP
// apart (protocol.md 1.2). TLS is run to its end and the first byte inside
// it read the same way. It returns the connection to log in over, a
// *handoff for the HTTP side, or a refusal to tell a plain client on a
// TLS server; on error c is closed.
func (s *Server) secure(c net.Conn, deadline time.Time) (net.Conn, *RejectError, error) {
	remote := c.RemoteAddr().String()
	first, err := readFirst(c)
	if err != nil {
		s.log.Warn("login failed", "remote", remote, "code", int(CodeLoginTimeout), "err", err)
		_ = c.Close()
		return nil, nil, err
	}
	pc := &prefixConn{Conn: c, prefix: []byte{first}}
	switch {
	case first == firstTLS && s.opts.TLS != nil:
		return s.secureTLS(c, pc, deadline)
	case first == firstTLS:
		s.log.Warn("login failed: the client speaks TLS and this server has no [tls]", "remote", remote, "code", int(CodeTLS))
		_ = c.Close()
		return nil, nil, &RejectError{Code: CodeTLS, Reason: "TLS client, plain server"}
	case isHTTP(first):
		return &handoff{Conn: pc, raw: c, deadline: deadline, release: s.releaser(c)}, nil, nil
	case first != firstYamux:
		s.log.Warn("login failed: not the gotunnel-mux protocol", "remote", remote, "code", int(CodeMalformed), "first_byte", int(first))
		_ = c.Close()
		return nil, nil, ErrMalformed
	case s.opts.TLS != nil && !s.opts.AllowPlain:
		return pc, &RejectError{Code: CodeTLS, Reason: "this server requires TLS; use a tls:// or wss:// server_addr (or [tls] with a bare host:port)"}, nil
	}
	return pc, nil, nil
}

// secureTLS runs the TLS handshake, then tells yamux from HTTP (wss) by
// the first byte inside.
func (s *Server) secureTLS(c, pc net.Conn, deadline time.Time) (net.Conn, *RejectError, error) {
	remote := c.RemoteAddr().String()
	tc := tls.Server(pc, s.opts.TLS)
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Warn("tls handshake failed", "remote", remote, "code", int(CodeTLS), "err", err)
		_ = c.Close()
		return nil, nil, err
	}
	first, err := readFirst(tc)
	if err != nil {
		s.log.Warn("login failed", "remote", remote, "code", int(CodeLoginTimeout), "err", err)
		_ = c.Close()
		return nil, nil, err
	}
	inner := &prefixConn{Conn: tc, prefix: []byte{first}}
	switch {
	case isHTTP(first):
		return &handoff{Conn: inner, raw: c, tls: true, deadline: deadline, release: s.releaser(c)}, nil, nil
	case first != firstYamux:
		s.log.Warn("login failed: not the gotunnel-mux protocol", "remote", remote, "code", int(CodeMalformed), "first_byte", int(first))
		_ = c.Close()
		return nil, nil, ErrMalformed
	}
	return inner, nil, nil
}

// releaser frees c's admission slot, once.
func (s *Server) releaser(c net.Conn) func() {
	var once sync.Once
	return func() { once.Do(func() { s.guard.release(c) }) }
}

func readFirst(c net.Conn) (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return b[0], err
}

// isHTTP reports whether b can start an HTTP request (a method's first
// letter).
func isHTTP(b byte) bool { return b >= 'A' && b <= 'Z' }

// checkLogin returns the refusal for a login that must be refused, or nil.
func (s *Server) checkLogin(l *Login) *RejectError {
	if l.Version != Version {
		return &RejectError{Code: CodeUnsupportedVersion, Reason: fmt.Sprintf("server speaks version %d, client %d", Version, l.Version)}
	}
	sum := sha256.Sum256([]byte(l.Token))
	if subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
		return &RejectError{Code: CodeBadToken, Reason: CodeBadToken.String()}
	}
	return nil
}

// refuse sends a last frame and closes the session. With linger, meant
// for a client that speaks the protocol but is refused (wrong token, plain
// on a TLS server), it first gives the client up to 2 s to read the frame
// and close, so that our close cannot turn into a reset that loses the
// frame; a peer sending garbage gets no such courtesy.
func (s *Server) refuse(ms *mux.Session, ctl *mux.Stream, last Message, linger bool) {
	_ = ctl.SetWriteDeadline(time.Now().Add(time.Second))
	if err := WriteFrame(ctl, last); err == nil && linger {
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
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.guard.sweep(now)
			shrink := now.Sub(lastShrink) >= shrinkEvery
			if shrink {
				lastShrink = now
			}
			for _, ss := range s.reg.sessions() {
				if idle := now.Sub(ss.mux.LastRead()); idle > s.opts.HeartbeatTimeout {
					ss.kill(fmt.Errorf("%w: nothing read for %s", ErrHeartbeatTimeout, idle.Round(time.Millisecond)))
				} else if shrink {
					ss.streams.shrink()
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
	if s.httpSrv != nil {
		_ = s.httpQ.Close()
		_ = s.httpSrv.Close()
	}
	for _, ss := range s.reg.close() {
		ss.kill(ErrServerClosed)
	}
	s.wg.Wait() // the HTTP side's Serve too: no connection is added after this
	s.httpConns.Wait()
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
	if s.httpQ != nil {
		_ = s.httpQ.Close()
	}
	s.mu.Unlock()
	s.reg.drain()
	err := pollUntil(ctx, 20*time.Millisecond, func() bool { return s.ActiveVisitors() == 0 })
	_ = s.Close()
	return err
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

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
