package control

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// handoff is a connection whose first bytes are HTTP, on its way to the
// server's HTTP side (WebSocket upgrades on ws_path, 404 elsewhere). Its
// admission slot is released when it closes or logs in.
type handoff struct {
	net.Conn
	raw      net.Conn  // the TCP connection under it (TLS and sniffing wrap it)
	tls      bool      // it came over TLS
	deadline time.Time // login deadline, from the TCP accept
	release  func()    // frees the admission slot; safe to call twice
}

// Close implements net.Conn and frees the admission slot.
func (h *handoff) Close() error {
	err := h.Conn.Close()
	h.release()
	return err
}

// connQueue is the listener of the HTTP side: the accept loop pushes the
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

// startHTTP starts the HTTP side on its queue, once.
func (s *Server) startHTTP(addr net.Addr) {
	s.httpOnce.Do(func() {
		s.httpQ = newConnQueue(addr)
		s.httpSrv = &http.Server{
			Handler:           http.HandlerFunc(s.serveHTTP),
			ReadHeaderTimeout: s.opts.LoginTimeout,
			ReadTimeout:       s.opts.LoginTimeout,
			IdleTimeout:       s.opts.LoginTimeout,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, handoffKey{}, c)
			},
			// net/http runs each connection in a goroutine of its own:
			// count them, so that Close can wait for every one.
			ConnState: func(_ net.Conn, state http.ConnState) {
				switch state {
				case http.StateNew:
					s.httpConns.Add(1)
				case http.StateHijacked, http.StateClosed:
					s.httpConns.Done()
				}
			},
		}
		// One request per connection: anything but an upgrade is answered
		// and closed, so an idle HTTP client holds no admission slot.
		s.httpSrv.SetKeepAlivesEnabled(false)
		s.wg.Go(func() { _ = s.httpSrv.Serve(s.httpQ) })
	})
}

// serveHTTP answers every HTTP request on bind_addr: a WebSocket upgrade
// on ws_path carries a session; anything else gets a plain 404, so the
// port looks like any web server to a scanner.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h, _ := r.Context().Value(handoffKey{}).(*handoff)
	if h == nil || r.URL.Path != s.opts.WSPath {
		http.NotFound(w, r)
		return
	}
	remote, err := s.realRemote(r, h.raw)
	if err != nil {
		// Charged to the proxy's own address, this client's wrong tokens
		// would pause every client behind the proxy: refuse it, loudly.
		s.guard.noForwarded(h.raw.RemoteAddr(), err)
		http.Error(w, "a trusted proxy must send X-Forwarded-For with the client's address", http.StatusBadRequest)
		return
	}
	if s.opts.TLS != nil && !h.tls && !s.opts.AllowPlain {
		s.log.Warn("login refused: plain WebSocket on a TLS server", "remote", remote.String(), "code", int(CodeTLS))
		http.Error(w, "this server requires TLS: use wss://", http.StatusForbidden)
		return
	}
	if remote != h.raw.RemoteAddr() && s.guard.isPaused(remote) {
		http.Error(w, "too many wrong tokens; try later", http.StatusTooManyRequests)
		return
	}
	if !s.enter() {
		http.Error(w, "server closing", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		s.log.Debug("websocket upgrade failed", "remote", remote.String(), "err", err)
		return
	}
	sess, err := s.loginOver(newWSConn(ws, remote), h.deadline, nil)
	h.release()
	if err != nil {
		return
	}
	_ = h.raw.SetDeadline(time.Time{})
	sess.run()
}

// A trusted proxy's request whose X-Forwarded-For names no client.
var (
	errNoForwardedFor  = errors.New("no X-Forwarded-For header")
	errBadForwardedFor = errors.New("an address in X-Forwarded-For does not parse")
)

// realRemote is the client's address: the TCP peer, or, when the peer is
// a trusted reverse proxy, the last address in X-Forwarded-For that is not
// itself a trusted proxy. When every address in it is a trusted proxy,
// the client runs on a proxy's own machine and the peer is its address.
// A trusted peer that sends no X-Forwarded-For, or one that does not parse
// up to the client's address, names no client: errNoForwardedFor or
// errBadForwardedFor.
func (s *Server) realRemote(r *http.Request, raw net.Conn) (net.Addr, error) {
	peer := raw.RemoteAddr()
	if !s.trustedIP(peerIP(peer)) {
		return peer, nil
	}
	values := r.Header.Values("X-Forwarded-For")
	if len(values) == 0 {
		return nil, errNoForwardedFor
	}
	hops := strings.Split(strings.Join(values, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parseHop(hops[i])
		if !ok {
			return nil, errBadForwardedFor // believe nothing left of garbage
		}
		if !s.trustedIP(hop) {
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

// trusted reports whether host, an IP address in text, is a trusted proxy.
func (s *Server) trusted(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && s.trustedIP(ip)
}

func (s *Server) trustedIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// enter counts a goroutine Close must wait for, unless the server is
// closing.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.wg.Add(1)
	return true
}
