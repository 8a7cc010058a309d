package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// EntryOptions configure the server's one-port entry.
type EntryOptions struct {
	// TLS, when set, is required of every client unless AllowPlain; nil
	// serves plain connections only.
	TLS        *tls.Config
	AllowPlain bool
	// WSPath is where HTTP clients upgrade to a WebSocket session; any
	// other HTTP request gets 404. Default DefaultWSPath.
	WSPath string
	// TrustedProxies are the addresses whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// HTTPTimeout bounds reading an HTTP request and the connection's
	// idle time on the HTTP side (the server's login_timeout).
	HTTPTimeout time.Duration
	// Session is handed every connection that arrived over WebSocket, in
	// the HTTP side's goroutine for it; it owns a.Conn and must call
	// a.Release once the login is decided. Required.
	Session func(a *Arrival)
	// Paused reports whether a client's address, forwarded by a trusted
	// proxy, is turned away (answered 429); nil: never.
	Paused func(remote net.Addr) bool
	// Refused is told of each upgrade the entry refused on its own: err is
	// ErrPlainWebSocket, ErrNoForwardedFor or ErrBadForwardedFor; remote
	// is the client's address or, for the latter two, the proxy's. Nil:
	// not told.
	Refused func(remote net.Addr, err error)
	Logger  *slog.Logger // nil discards
}

// Arrival is a connection that is ready for a session: the next bytes on
// Conn are yamux's.
type Arrival struct {
	Conn      net.Conn  // the session's bytes: the TCP or TLS connection, or the WebSocket stream
	Raw       net.Conn  // the TCP connection under it, for deadlines
	Remote    net.Addr  // the client: Raw's peer, or the address a trusted proxy forwarded
	Transport string    // TCP, TLS, WS or WSS
	Deadline  time.Time // the handshake's deadline, given to Handle
	// TLSRequired: a plain client on a server that requires TLS; it is to
	// be refused in-band, where it can read why (protocol.md 1.2).
	TLSRequired bool
	// Release frees the connection's admission slot; safe to call twice.
	Release func()
}

// Why a connection was not let in.
var (
	// ErrNotProtocol: the first byte is none of yamux, TLS or HTTP; see
	// FirstByteError for the byte.
	ErrNotProtocol = errors.New("transport: not the gotunnel-mux protocol")
	// ErrTLSOnPlain: a TLS client on a server without TLS.
	ErrTLSOnPlain = errors.New("transport: TLS client, plain server")
	// ErrPlainWebSocket: a plain WebSocket upgrade on a server that
	// requires TLS (answered 403, with the refusal header).
	ErrPlainWebSocket = errors.New("transport: plain WebSocket on a TLS server")
	// ErrNoForwardedFor, ErrBadForwardedFor: a trusted proxy's request whose
	// X-Forwarded-For names no client (answered 400).
	ErrNoForwardedFor  = errors.New("no X-Forwarded-For header")
	ErrBadForwardedFor = errors.New("an address in X-Forwarded-For does not parse")
	// ErrHandedOff: the connection speaks HTTP; the HTTP side has it.
	ErrHandedOff = errors.New("transport: handed to the HTTP side")
)

// FirstByteError is a connection whose first byte is not the protocol's.
type FirstByteError struct{ Byte byte }

// Error implements error.
func (e *FirstByteError) Error() string {
	return fmt.Sprintf("%v (first byte %#02x)", ErrNotProtocol, e.Byte)
}

// Unwrap makes it ErrNotProtocol.
func (e *FirstByteError) Unwrap() error { return ErrNotProtocol }

// HandshakeError is a failed TLS handshake on the server's side.
type HandshakeError struct{ Err error }

// Error implements error.
func (e *HandshakeError) Error() string { return "tls handshake: " + e.Err.Error() }

// Unwrap returns crypto/tls's error.
func (e *HandshakeError) Unwrap() error { return e.Err }

// Entry is the server's one port: it tells yamux, TLS and HTTP apart by
// the first byte (protocol.md 1.2), runs TLS, and serves HTTP with its own
// net/http server, which upgrades WebSocket sessions on WSPath.
type Entry struct {
	// set in NewEntry
	opts EntryOptions
	log  *slog.Logger

	mu        sync.Mutex // guards draining, closed and the start of the HTTP side
	draining  bool       // Drain or Close: no more HTTP connections
	closed    bool       // Close: no more upgrades
	httpQ     *connQueue
	httpSrv   *http.Server
	wg        sync.WaitGroup // the HTTP server's Serve
	httpConns sync.WaitGroup // net/http's connection goroutines, until hijacked or closed
}

// NewEntry returns an entry ready to Handle connections.
func NewEntry(opts EntryOptions) *Entry {
	if opts.WSPath == "" {
		opts.WSPath = DefaultWSPath
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Entry{opts: opts, log: log}
}

// Handle reads c's first byte, and for TLS runs the handshake and reads
// the first byte inside, until deadline (or ctx). It owns c. A yamux
// connection is returned ready for its session; an HTTP one goes to the
// HTTP side (ErrHandedOff), which later hands a WebSocket session to
// Options.Session. On any other error c is closed. release frees c's
// admission slot: the Arrival's receiver calls it (a.Release), and the
// entry does when it keeps or closes c itself.
func (e *Entry) Handle(ctx context.Context, c net.Conn, deadline time.Time, release func()) (*Arrival, error) {
	release = once(release)
	first, err := sniff(c)
	if err != nil {
		_ = c.Close()
		release()
		return nil, fmt.Errorf("read first byte: %w", err)
	}
	a := &Arrival{Conn: first.conn, Raw: c, Remote: c.RemoteAddr(), Transport: TCP, Deadline: deadline, Release: release}
	switch b := first.b; {
	case b == firstTLS && e.opts.TLS != nil:
		return e.handleTLS(ctx, a)
	case b == firstTLS:
		err = ErrTLSOnPlain
	case isHTTP(b):
		return nil, e.handOff(a, false)
	case b != firstYamux:
		err = &FirstByteError{Byte: b}
	default:
		a.TLSRequired = e.opts.TLS != nil && !e.opts.AllowPlain
		return a, nil
	}
	_ = c.Close()
	release()
	return nil, err
}

// handleTLS runs the TLS handshake, then tells yamux from HTTP (wss) by
// the first byte inside.
func (e *Entry) handleTLS(ctx context.Context, a *Arrival) (*Arrival, error) {
	tc := tls.Server(a.Conn, e.opts.TLS)
	hctx, cancel := context.WithDeadline(ctx, a.Deadline)
	defer cancel()
	err := tc.HandshakeContext(hctx)
	if err != nil {
		err = &HandshakeError{Err: err}
	} else {
		var first byte
		if first, err = readFirst(tc); err != nil {
			err = fmt.Errorf("read first byte: %w", err)
		} else {
			a.Conn, a.Transport = &prefixConn{Conn: tc, prefix: []byte{first}}, TLS
			switch {
			case isHTTP(first):
				return nil, e.handOff(a, true)
			case first == firstYamux:
				return a, nil
			}
			err = &FirstByteError{Byte: first}
		}
	}
	_ = a.Raw.Close()
	a.Release()
	return nil, err
}

// sniffed is a connection's first byte, and the connection that still
// has it to read: c itself when the byte was only peeked, else c with the
// byte replayed.
type sniffed struct {
	b    byte
	conn net.Conn
}

// sniff reads c's first byte, leaving it on the socket where it can.
func sniff(c net.Conn) (sniffed, error) {
	if b, ok, err := peekFirst(c); ok {
		return sniffed{b, c}, err
	}
	b, err := readFirst(c)
	return sniffed{b, &prefixConn{Conn: c, prefix: []byte{b}}}, err
}

func readFirst(c net.Conn) (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return b[0], err
}

// isHTTP reports whether b can start an HTTP request (a method's first
// letter).
func isHTTP(b byte) bool { return b >= 'A' && b <= 'Z' }

// once makes f safe to call more than once.
func once(f func()) func() {
	var o sync.Once
	return func() { o.Do(f) }
}

// handoff is a connection whose first bytes are HTTP, on its way to the
// HTTP side (WebSocket upgrades on WSPath, 404 elsewhere). Its admission
// slot is released when it closes or logs in.
type handoff struct {
	net.Conn
	a   *Arrival
	tls bool
}

// Close implements net.Conn and frees the admission slot.
func (h *handoff) Close() error {
	err := h.Conn.Close()
	h.a.Release()
	return err
}

// handOff gives a to the HTTP side, starting it on first use.
func (e *Entry) handOff(a *Arrival, overTLS bool) error {
	h := &handoff{Conn: a.Conn, a: a, tls: overTLS}
	q := e.startHTTP(a.Raw.LocalAddr())
	if q == nil || !q.push(h) {
		_ = h.Close()
	}
	return ErrHandedOff
}

// connQueue is the listener of the HTTP side: Handle pushes the
// connections it found to speak HTTP.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept implements net.Listener.
func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

// Addr implements net.Listener.
func (q *connQueue) Addr() net.Addr { return q.addr }

// push hands c to the HTTP side; false once it is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.done:
		return false
	}
}

type handoffKey struct{}

// startHTTP starts the HTTP side on its queue, once; nil after Close.
func (e *Entry) startHTTP(addr net.Addr) *connQueue {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.draining {
		return nil
	}
	if e.httpQ != nil {
		return e.httpQ
	}
	e.httpQ = newConnQueue(addr)
	e.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(e.serveHTTP),
		ReadHeaderTimeout: e.opts.HTTPTimeout,
		ReadTimeout:       e.opts.HTTPTimeout,
		IdleTimeout:       e.opts.HTTPTimeout,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, handoffKey{}, c)
		},
		// net/http runs each connection in a goroutine of its own:
		// count them, so that Close can wait for every one.
		ConnState: func(_ net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				e.httpConns.Add(1)
			case http.StateHijacked, http.StateClosed:
				e.httpConns.Done()
			}
		},
	}
	// One request per connection: anything but an upgrade is answered
	// and closed, so an idle HTTP client holds no admission slot.
	e.httpSrv.SetKeepAlivesEnabled(false)
	srv, q := e.httpSrv, e.httpQ
	e.wg.Go(func() { _ = srv.Serve(q) })
	return q
}

// serveHTTP answers every HTTP request on the entry: a WebSocket upgrade
// on WSPath carries a session; anything else gets a plain 404, so the port
// looks like any web server to a scanner.
func (e *Entry) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h, _ := r.Context().Value(handoffKey{}).(*handoff)
	if h == nil || r.URL.Path != e.opts.WSPath {
		http.NotFound(w, r)
		return
	}
	remote, err := e.realRemote(r, h.a.Raw)
	if err != nil {
		// Charged to the proxy's own address, this client's wrong tokens
		// would pause every client behind the proxy: refuse it, loudly.
		e.refused(h.a.Raw.RemoteAddr(), err)
		http.Error(w, "a trusted proxy must send X-Forwarded-For with the client's address", http.StatusBadRequest)
		return
	}
	if e.opts.TLS != nil && !h.tls && !e.opts.AllowPlain {
		e.refused(remote, ErrPlainWebSocket)
		w.Header().Set(refusalHeader, refusalTLSRequired)
		http.Error(w, "this server requires TLS: use wss://", http.StatusForbidden)
		return
	}
	if remote != h.a.Raw.RemoteAddr() && e.opts.Paused != nil && e.opts.Paused(remote) {
		http.Error(w, "too many wrong tokens; try later", http.StatusTooManyRequests)
		return
	}
	if e.isClosed() {
		http.Error(w, "server closing", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		e.log.Debug("websocket upgrade failed", "remote", remote.String(), "err", err)
		return
	}
	a := *h.a
	a.Conn, a.Remote, a.Transport = newWSConn(ws, remote), remote, WS
	if h.tls {
		a.Transport = WSS
	}
	e.opts.Session(&a)
}

func (e *Entry) refused(remote net.Addr, err error) {
	if e.opts.Refused != nil {
		e.opts.Refused(remote, err)
	}
}

func (e *Entry) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// Drain stops taking HTTP connections (a later one is closed at once),
// and lets those already on the HTTP side finish: an upgrade under way
// still reaches Options.Session, to be refused there in words.
func (e *Entry) Drain() {
	e.mu.Lock()
	e.draining = true
	q := e.httpQ
	e.mu.Unlock()
	if q != nil {
		_ = q.Close()
	}
}

// Close stops the HTTP side: connections still being read are closed,
// and it waits for net/http's goroutines. Sessions already handed to
// Options.Session are not its: their owner ends them. Handle may still be
// called after Close: an HTTP connection is then closed at once.
func (e *Entry) Close() error {
	e.mu.Lock()
	e.draining, e.closed = true, true
	srv, q := e.httpSrv, e.httpQ
	e.mu.Unlock()
	if srv != nil {
		_ = q.Close()
		_ = srv.Close()
	}
	e.wg.Wait()
	e.httpConns.Wait()
	return nil
}

// realRemote is the client's address: the TCP peer, or, when the peer is
// a trusted reverse proxy, the last address in X-Forwarded-For that is not
// itself a trusted proxy. When every address in it is a trusted proxy,
// the client runs on a proxy's own machine and the peer is its address.
// A trusted peer that sends no X-Forwarded-For, or one that does not parse
// up to the client's address, names no client: ErrNoForwardedFor or
// ErrBadForwardedFor.
func (e *Entry) realRemote(r *http.Request, raw net.Conn) (net.Addr, error) {
	peer := raw.RemoteAddr()
	if !e.TrustedIP(PeerIP(peer)) {
		return peer, nil
	}
	values := r.Header.Values("X-Forwarded-For")
	if len(values) == 0 {
		return nil, ErrNoForwardedFor
	}
	hops := strings.Split(strings.Join(values, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parseHop(hops[i])
		if !ok {
			return nil, ErrBadForwardedFor // believe nothing left of garbage
		}
		if !e.TrustedIP(hop) {
			return forwardedAddr(hop.String()), nil
		}
	}
	return peer, nil
}

// parseHop parses one address of X-Forwarded-For: an IP address, or one
// with a port ("203.0.113.9:4711", "[2001:db8::1]:443"), as some proxies
// write it. An IPv4-mapped IPv6 address is its IPv4 address.
func parseHop(hop string) (netip.Addr, bool) {
	hop = strings.TrimSpace(hop)
	if ip, err := netip.ParseAddr(hop); err == nil {
		return ip.Unmap(), true
	}
	ap, err := netip.ParseAddrPort(hop)
	return ap.Addr().Unmap(), err == nil
}

// TrustedIP reports whether ip is a trusted proxy's.
func (e *Entry) TrustedIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range e.opts.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// PeerIP is a's IP address, an IPv4-mapped IPv6 address as IPv4, without
// a zone; the zero Addr when a is not an IP address (a pipe).
func PeerIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	ip, _ := netip.ParseAddr(a.String())
	return ip.Unmap().WithZone("")
}

// forwardedAddr is a peer address taken from X-Forwarded-For: an IP
// address without a port.
type forwardedAddr string

func (a forwardedAddr) Network() string { return "tcp" }
func (a forwardedAddr) String() string  { return string(a) }
