package control

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// guard is the server's admission control for connections that have not
// logged in yet: a cap on them in all and per address, and a pause for an
// address that sent too many wrong tokens. A flood of silent sockets or of
// guesses costs the server a bounded amount, and it reaches logged-in
// sessions not at all.
type guard struct {
	// set in newGuard
	maxConns, maxPerIP int
	badLimit           int
	badPause           time.Duration
	log                *slog.Logger
	trusted            func(host string) bool // a reverse proxy: not capped per address

	mu     sync.Mutex // guards the fields below
	conns  map[net.Conn]string
	perIP  map[string]int
	bad    map[string]*badRecord
	closed bool
	warn   every // rate of the "connection refused" line
	xff    every // rate of the "no usable X-Forwarded-For" line
}

// badRecord counts one address's wrong tokens within a pause window.
type badRecord struct {
	n     int
	since time.Time // first wrong token of the window
	until time.Time // turned away until then; zero: not paused
}

// maxBadRecords bounds the addresses remembered for bad logins.
const maxBadRecords = 1 << 16

func newGuard(o *ServerOptions, trusted func(string) bool) *guard {
	return &guard{
		maxConns: o.MaxUnauthenticated, maxPerIP: o.MaxUnauthenticatedPerIP,
		badLimit: o.BadLoginLimit, badPause: o.BadLoginPause, log: o.Logger, trusted: trusted,
		conns: make(map[net.Conn]string), perIP: make(map[string]int), bad: make(map[string]*badRecord),
	}
}

// hostOf is the address of a peer without its port: the unit of the
// per-address limits.
func hostOf(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// admit tracks c until release, or refuses it (the caller closes it) and
// says why. It refuses everything once closed.
func (g *guard) admit(c net.Conn) bool {
	ip := hostOf(c.RemoteAddr())
	g.mu.Lock()
	defer g.mu.Unlock()
	why := ""
	switch {
	case g.closed:
		return false
	case g.paused(ip):
		why = "address paused after repeated wrong tokens"
	case len(g.conns) >= g.maxConns:
		why = "max_unauthenticated reached"
	case g.perIP[ip] >= g.maxPerIP && !g.trusted(ip):
		// A trusted reverse proxy carries many clients: its own address is
		// not capped; their forwarded addresses are checked by isPaused.
		why = "max_unauthenticated_per_ip reached"
	default:
		g.conns[c] = ip
		g.perIP[ip]++
		return true
	}
	if n, ok := g.warn.allow(10 * time.Second); ok {
		g.log.Warn("connection refused before login", "remote", ip, "reason", why, "refused", n)
	}
	return false
}

// isPaused reports whether remote's address is turned away for wrong
// tokens: for a client behind a trusted reverse proxy, the forwarded
// address, known only once its HTTP request is read.
func (g *guard) isPaused(remote net.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused(hostOf(remote))
}

func (g *guard) paused(ip string) bool {
	r := g.bad[ip]
	return r != nil && time.Now().Before(r.until)
}

// release forgets c: it logged in or ended.
func (g *guard) release(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ip, ok := g.conns[c]
	if !ok {
		return
	}
	delete(g.conns, c)
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

// badToken counts a wrong token from remote's address; at bad_login_limit
// the address is turned away for bad_login_pause. A trusted proxy's own
// address is never counted: pausing it would turn away every client
// behind the proxy (and a session through it that names no client of its
// own is refused before login, see noForwarded).
func (g *guard) badToken(remote net.Addr) {
	ip, now := hostOf(remote), time.Now()
	if g.badLimit <= 0 || g.trusted(ip) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.bad[ip]
	if r == nil || now.Sub(r.since) > g.badPause {
		if r == nil && len(g.bad) >= maxBadRecords {
			return
		}
		r = &badRecord{since: now}
		g.bad[ip] = r
	}
	if r.n++; r.n == g.badLimit {
		r.until = now.Add(g.badPause)
		g.log.Warn("address paused after repeated wrong tokens", "remote", ip, "failures", r.n, "pause", g.badPause.String(), "code", int(CodeBadToken))
	}
}

// noForwarded logs, at most every 10 s, that a WebSocket upgrade from the
// trusted proxy at proxy was refused because its X-Forwarded-For names no
// client (why): a proxy that is not set up to send it shows at once.
func (g *guard) noForwarded(proxy net.Addr, why error) {
	if n, ok := g.xff.allow(10 * time.Second); ok {
		g.log.Warn("trusted proxy sent no usable X-Forwarded-For", "proxy", hostOf(proxy), "err", why, "refused", n)
	}
}

// goodLogin clears the address's record.
func (g *guard) goodLogin(remote net.Addr) {
	g.mu.Lock()
	delete(g.bad, hostOf(remote))
	g.mu.Unlock()
}

// sweep drops the records whose window and pause have passed.
func (g *guard) sweep(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for ip, r := range g.bad {
		if now.Sub(r.since) > g.badPause && now.After(r.until) {
			delete(g.bad, ip)
		}
	}
}

// close refuses every later connection and closes those not logged in.
func (g *guard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for c := range g.conns {
		_ = c.Close()
	}
}

// every lets one event through per interval and counts the rest.
type every struct {
	mu   sync.Mutex
	next time.Time
	n    int // events since the last one let through
}

// allow reports whether an event may be logged now, and how many events
// (this one included) happened since the last one that was.
func (e *every) allow(interval time.Duration) (int, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	now := time.Now()
	if now.Before(e.next) {
		return e.n, false
	}
	n := e.n
	e.n, e.next = 0, now.Add(interval)
	return n, true
}
