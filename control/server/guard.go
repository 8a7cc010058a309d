package server

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
	"golang.org/x/time/rate"
)

// guard is the server's admission control for connections that have not
// logged in yet: a cap on them in all and per address, and a pause for an
// address that sent too many wrong tokens. A flood of silent sockets or of
// guesses costs the server a bounded amount, and it reaches logged-in
// sessions not at all. The unit of "an address" is limitKey's.
type guard struct {
	// set in newGuard
	log     *slog.Logger
	trusted func(netip.Addr) bool // a reverse proxy: its own address is not limited

	mu                 sync.Mutex // guards the fields below
	maxConns, maxPerIP int        // set by newGuard and setLimits
	badLimit           int
	badPause           time.Duration
	conns              map[net.Conn]admitted
	perIP              map[netip.Prefix]int
	bad                map[netip.Prefix]*badRecord
	closed             bool
	warnN              int   // connections refused since the last "connection refused" line
	xffN               int   // upgrades refused since the last "no usable X-Forwarded-For" line
	hdrN               int   // connections reset since the last "no valid PROXY protocol header" line
	hdrTotal           int64 // connections reset for their PROXY header, in all

	warn, xff, hdr rate.Sometimes // at most one of each line per logEvery
}

// admitted is what admit noted about a connection, for release.
type admitted struct {
	key    netip.Prefix
	capped bool // counted in perIP: not from a trusted proxy
}

// badRecord counts one address's wrong tokens within a pause window.
type badRecord struct {
	n     int
	since time.Time // first wrong token of the window
	until time.Time // turned away until then; zero: not paused
}

// maxBadRecords bounds the addresses remembered for bad logins.
const maxBadRecords = 1 << 16

func newGuard(o *Options, trusted func(netip.Addr) bool) *guard {
	return &guard{
		maxConns: o.MaxUnauthenticated, maxPerIP: o.MaxUnauthenticatedPerIP,
		badLimit: o.BadLoginLimit, badPause: o.BadLoginPause, log: o.Logger, trusted: trusted,
		conns: make(map[net.Conn]admitted), perIP: make(map[netip.Prefix]int), bad: make(map[netip.Prefix]*badRecord),
		warn: rate.Sometimes{Interval: logEvery}, xff: rate.Sometimes{Interval: logEvery}, hdr: rate.Sometimes{Interval: logEvery},
	}
}

// setLimits puts o's limits in force (a reload): connections already
// admitted stay, new ones meet the new caps.
func (g *guard) setLimits(o *Options) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.maxConns, g.maxPerIP = o.MaxUnauthenticated, o.MaxUnauthenticatedPerIP
	g.badLimit, g.badPause = o.BadLoginLimit, o.BadLoginPause
}

// logEvery is how often a refusal that can come in floods is logged.
const logEvery = 10 * time.Second

// limitKey is the unit of the per-address limits (max_unauthenticated_per_ip
// and the bad-login pause): an IPv4 address, or the /64 an IPv6 address
// lies in, since one host or one site is routinely handed a whole /64 and
// may use any address in it. Peers that are not IP share the zero Prefix.
func limitKey(ip netip.Addr) netip.Prefix {
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits) // the zero Addr gives the zero Prefix
	return p
}

// keyText is a key as an operator reads it: "192.0.2.1", "2001:db8::/64".
func keyText(k netip.Prefix) string {
	switch {
	case !k.IsValid():
		return "non-IP peers"
	case k.IsSingleIP():
		return k.Addr().String()
	}
	return k.String()
}

// admit tracks c until release, or refuses it (the caller closes it) and
// says why. It refuses everything once closed. A trusted reverse proxy
// carries many clients: its own connections are neither capped per
// address nor paused (their forwarded addresses are checked by isPaused),
// even when its /64 is.
func (g *guard) admit(c net.Conn) bool {
	ip := transport.PeerIP(c.RemoteAddr())
	key, proxy := limitKey(ip), g.trusted(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	why := ""
	switch {
	case g.closed:
		return false
	case !proxy && g.paused(key):
		why = "address paused after repeated wrong tokens"
	case len(g.conns) >= g.maxConns:
		why = "max_unauthenticated reached"
	case !proxy && g.perIP[key] >= g.maxPerIP:
		why = "max_unauthenticated_per_ip reached"
	default:
		g.conns[c] = admitted{key: key, capped: !proxy}
		if !proxy {
			g.perIP[key]++
		}
		return true
	}
	g.refused(key, why)
	return false
}

// refused logs, at most every logEvery, that a connection from key was
// refused for why. g.mu is held.
func (g *guard) refused(key netip.Prefix, why string) {
	g.warnN++
	g.warn.Do(func() {
		g.log.Warn("connection refused before login", "remote", keyText(key), "reason", why, "refused", g.warnN)
		g.warnN = 0
	})
}

// rekey holds c, admitted from a trusted proxy, to the limits of remote,
// the address its PROXY header named: remote's pause and its
// max_unauthenticated_per_ip, as admit holds a direct connection (a
// remote that is itself a trusted proxy, as for the LOCAL command of a
// health check, stays uncapped). It refuses, and logs why as admit does,
// when remote is over them or c is no longer admitted; the caller then
// closes and releases c.
func (g *guard) rekey(c net.Conn, remote net.Addr) bool {
	ip := transport.PeerIP(remote)
	key := limitKey(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	a, ok := g.conns[c]
	why := ""
	switch {
	case !ok:
		return false
	case g.trusted(ip):
		return true
	case g.paused(key):
		why = "address paused after repeated wrong tokens"
	case g.perIP[key] >= g.maxPerIP:
		why = "max_unauthenticated_per_ip reached"
	default:
		g.uncap(a)
		g.conns[c] = admitted{key: key, capped: true}
		g.perIP[key]++
		return true
	}
	g.refused(key, why)
	return false
}

// badHeader counts a connection from the trusted proxy at proxy that was
// reset for its PROXY header (why), and logs it at most every logEvery:
// a balancer that is not set up to send the header shows at once.
func (g *guard) badHeader(proxy net.Addr, why error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hdrN++
	g.hdrTotal++
	g.hdr.Do(func() {
		g.log.Warn("connection reset: no valid PROXY protocol header from a trusted proxy", "proxy", proxy.String(), "err", why, "reset", g.hdrN)
		g.hdrN = 0
	})
}

// badHeaders is how many connections badHeader counted.
func (g *guard) badHeaders() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hdrTotal
}

// isPaused reports whether remote's address is turned away for wrong
// tokens: for a client behind a trusted reverse proxy, the forwarded
// address, known only once its HTTP request is read.
func (g *guard) isPaused(remote net.Addr) bool {
	key := limitKey(transport.PeerIP(remote))
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused(key)
}

func (g *guard) paused(key netip.Prefix) bool {
	r := g.bad[key]
	return r != nil && time.Now().Before(r.until)
}

// release forgets c: it logged in or ended.
func (g *guard) release(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	a, ok := g.conns[c]
	if !ok {
		return
	}
	delete(g.conns, c)
	g.uncap(a)
}

// uncap takes a out of its address's count. g.mu is held.
func (g *guard) uncap(a admitted) {
	if !a.capped {
		return
	}
	if g.perIP[a.key]--; g.perIP[a.key] <= 0 {
		delete(g.perIP, a.key)
	}
}

// badToken counts a wrong token from remote's address; at bad_login_limit
// the address is turned away for bad_login_pause. A trusted proxy's own
// address is never counted: pausing it would turn away every client
// behind the proxy (and a session through it that names no client of its
// own is refused before login, see noForwarded).
func (g *guard) badToken(remote net.Addr) {
	ip, now := transport.PeerIP(remote), time.Now()
	if g.trusted(ip) {
		return
	}
	key := limitKey(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.badLimit <= 0 {
		return
	}
	r := g.bad[key]
	if r == nil || now.Sub(r.since) > g.badPause {
		if r == nil && len(g.bad) >= maxBadRecords {
			return
		}
		r = &badRecord{since: now}
		g.bad[key] = r
	}
	if r.n++; r.n == g.badLimit {
		r.until = now.Add(g.badPause)
		g.log.Warn("address paused after repeated wrong tokens", "remote", keyText(key), "failures", r.n, "pause", g.badPause.String(), "code", int(control.CodeBadToken))
	}
}

// noForwarded logs, at most every 10 s, that a WebSocket upgrade from the
// trusted proxy at proxy was refused because its X-Forwarded-For names no
// client (why): a proxy that is not set up to send it shows at once.
func (g *guard) noForwarded(proxy net.Addr, why error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.xffN++
	g.xff.Do(func() {
		g.log.Warn("trusted proxy sent no usable X-Forwarded-For", "proxy", transport.PeerIP(proxy).String(), "err", why, "refused", g.xffN)
		g.xffN = 0
	})
}

// goodLogin clears the address's record.
func (g *guard) goodLogin(remote net.Addr) {
	key := limitKey(transport.PeerIP(remote))
	g.mu.Lock()
	delete(g.bad, key)
	g.mu.Unlock()
}

// sweep drops the records whose window and pause have passed.
func (g *guard) sweep(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for key, r := range g.bad {
		if now.Sub(r.since) > g.badPause && now.After(r.until) {
			delete(g.bad, key)
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
