package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jpillora/backoff"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
)

// The ways a client uses several servers (Options.HA).
const (
	// HAFailover keeps one session at a time: with the first server that
	// answers, in order; a failed attempt moves on to the next server, and
	// while the client is on a later one it tries the earlier ones every
	// reconnect.max and moves back to the first that logs it in.
	HAFailover = "failover"
	// HAAll keeps a session with every server at once, each with its own
	// heartbeat and backoff, and registers every mapping on each.
	HAAll = "all"
)

// Endpoint is a server besides Options.ServerAddr.
type Endpoint struct {
	Addr      string // host:port; required
	Transport string // transport.TCP (default), TLS, WS or WSS
	WSPath    string // for ws and wss; default transport.DefaultWSPath
}

// link is one server the client keeps, or may keep, a session with: its
// dialer, its current session, and its attempts.
type link struct {
	c         *Client
	addr      string // host:port
	host      string // for the mapping lines in the log and the PROXY header
	transport string // as the status names it: tcp, tls, ws or wss
	tlsName   string // the TLS server name it checks, for the explanation of a failure
	dialer    *transport.Dialer

	reconnects atomic.Int64           // attempts after the first
	lastErr    atomic.Pointer[string] // why the last session or attempt ended

	mu    sync.Mutex // guards cur and ports
	cur   *clientSession
	ports map[string]int // the port this server bound last for each mapping name, asked for again when RemotePort is 0
}

// lastPort returns the port the server bound last for the mapping name
// (0: none yet), and when port is not 0 records it as the new last one.
func (l *link) lastPort(name string, port int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := l.ports[name]
	if port != 0 {
		if l.ports == nil {
			l.ports = make(map[string]int)
		}
		l.ports[name] = port
	}
	return prev
}

// newLink checks e and returns its link. A TLS config without a server
// name checks each server's own host.
func newLink(c *Client, e Endpoint) (*link, error) {
	host, _, err := net.SplitHostPort(e.Addr)
	if err != nil {
		return nil, fmt.Errorf("client: server address %q: %w", e.Addr, err)
	}
	tr := cmp.Or(e.Transport, transport.TCP)
	conf := c.opts.TLS
	if conf != nil && conf.ServerName == "" && !conf.InsecureSkipVerify {
		conf = conf.Clone()
		conf.ServerName = host
	}
	d := &transport.Dialer{Transport: tr, Addr: e.Addr, WSPath: cmp.Or(e.WSPath, transport.DefaultWSPath), Proxy: c.opts.Proxy,
		TLS: conf, DialTimeout: c.opts.DialTimeout, HandshakeTimeout: c.opts.HandshakeTimeout, Dial: c.opts.Dial}
	if err := d.Check(); err != nil {
		return nil, err
	}
	l := &link{c: c, addr: e.Addr, host: host, transport: tr, dialer: d}
	if conf != nil {
		l.tlsName = conf.ServerName
		if tr == transport.TCP {
			l.transport = "tls"
		}
	}
	return l, nil
}

func (l *link) setCurrent(cs *clientSession) {
	l.mu.Lock()
	l.cur = cs
	l.mu.Unlock()
}

func (l *link) current() *clientSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// failed records why an attempt or a session ended.
func (l *link) failed(err error) {
	if err != nil {
		msg := err.Error()
		l.lastErr.Store(&msg)
	}
}

// attempted counts an attempt after the first.
func (l *link) attempted() {
	l.reconnects.Add(1)
	l.c.obs.Reconnect()
}

// reconnectLoop keeps a session with l's server: one attempt per
// iteration, with backoff in between, reset only after a healthy session.
func (l *link) reconnectLoop(ctx context.Context) error {
	c := l.c
	w := newWaiter(ctx, c)
	defer w.stop()
	for attempt := 0; ; attempt++ {
		if c.stopped() {
			return nil
		}
		if attempt > 0 {
			l.attempted()
		}
		healthy, err := l.connectOnce(ctx)
		if ctx.Err() != nil || c.stopped() {
			return nil
		}
		if done, err := w.after(l, healthy, err); done {
			return err
		}
		if !w.wait(l, err) {
			return nil
		}
	}
}

// fatal returns err when it is a refusal that retrying cannot fix.
func (l *link) fatal(err error) error {
	var re *control.RejectError
	if errors.As(err, &re) && re.Code.Fatal() {
		l.c.log.Error("server refused the client; not retrying", "server", l.addr, "code", int(re.Code), "reason", re.Reason)
		return err
	}
	return nil
}

// connectOnce runs one session from dial to its end. healthy reports that
// it logged in and every registration was answered.
func (l *link) connectOnce(ctx context.Context) (healthy bool, err error) {
	cs, err := l.open(ctx)
	if err != nil || cs == nil {
		return false, err
	}
	return l.serve(ctx, cs)
}

// open dials the server and logs in; nil, nil when Shutdown began
// meanwhile.
func (l *link) open(ctx context.Context) (*clientSession, error) {
	conn, offer, err := l.dialer.DialContext(ctx)
	if errors.Is(err, transport.ErrTLSRequired) {
		return nil, &control.RejectError{Code: control.CodeTLS, Reason: "the server requires TLS for WebSocket; use a wss:// server_addr"}
	}
	if err != nil {
		return nil, err
	}
	cs, err := l.c.handshake(ctx, l, conn, offer)
	if err == nil && l.c.stopped() {
		cs.relayCancel()
		_ = cs.mux.Close()
		return nil, nil
	}
	return cs, err
}

// serve serves cs, l's new session, until it ends.
func (l *link) serve(ctx context.Context, cs *clientSession) (healthy bool, err error) {
	l.setCurrent(cs)
	defer l.setCurrent(nil)
	l.c.emit(Event{Kind: EventSessionUp, Server: l.addr})
	err = cs.serve(ctx)
	l.c.emit(Event{Kind: EventSessionDown, Server: l.addr, Err: err})
	return cs.healthy.Load(), err
}

// waiter is the backoff between attempts, shared by a reconnect loop's
// servers, and the count of attempts that failed in a row; its waits end
// early at Shutdown.
type waiter struct {
	c        *Client
	failures int
	b        *backoff.Backoff
	ctx      context.Context
	cancel   context.CancelFunc
	stopAt   func() bool
}

func newWaiter(ctx context.Context, c *Client) *waiter {
	r := c.opts.Reconnect
	w := &waiter{c: c, b: &backoff.Backoff{Min: r.Min, Max: r.Max, Factor: r.Factor, Jitter: !r.NoJitter}}
	w.ctx, w.cancel = context.WithCancel(ctx)
	w.stopAt = context.AfterFunc(c.stopping, w.cancel)
	return w
}

func (w *waiter) stop() {
	w.stopAt()
	w.cancel()
}

// after handles the end of an attempt (or a session) with l: it records
// why, resets the backoff after a healthy session, and reports whether the
// loop must end, and with what: a refusal that retrying cannot fix, or
// reconnect.max_retries failures in a row.
func (w *waiter) after(l *link, healthy bool, err error) (done bool, _ error) {
	l.failed(err)
	if healthy {
		w.b.Reset()
		w.failures = 0
	}
	if err := l.fatal(err); err != nil {
		return true, err
	}
	w.failures++
	if r := w.c.opts.Reconnect; r.MaxRetries > 0 && w.failures > r.MaxRetries {
		w.c.log.Error("giving up", "server", l.addr, "attempts", w.failures, "code", int(connectCode(err)), "err", err)
		return true, fmt.Errorf("client: gave up after %d attempts: %w", w.failures, err)
	}
	return false, nil
}

// wait logs the failed attempt at l and waits the next backoff; false
// when the client stops meanwhile.
func (w *waiter) wait(l *link, err error) bool {
	wait := spread(w.b.Duration(), w.c.opts.Reconnect)
	attrs := []any{"code", int(connectCode(err)), "err", err, "retry_in", wait.Round(time.Millisecond).String()}
	if len(w.c.links) > 1 {
		attrs = append(attrs, "server", l.addr)
	}
	w.c.log.Warn("disconnected", attrs...)
	return sleepCtx(w.ctx, wait)
}

// runAll keeps a session with every server at once (HAAll); it returns
// when every link's loop has, with their errors.
func (c *Client) runAll(ctx context.Context) error {
	errs := make([]error, len(c.links))
	var wg sync.WaitGroup
	for i, l := range c.links {
		wg.Go(func() { errs[i] = l.reconnectLoop(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// runFailover keeps one session at a time (HAFailover): each failed
// attempt moves on to the next server, in order, with the backoff in
// between; a healthy session resets the backoff.
func (c *Client) runFailover(ctx context.Context) error {
	w := newWaiter(ctx, c)
	defer w.stop()
	cur := 0
	for attempt := 0; ; attempt++ {
		if c.stopped() {
			return nil
		}
		l := c.links[cur]
		if attempt > 0 {
			l.attempted()
		}
		cs, err := l.open(ctx)
		healthy := false
		if err == nil && cs != nil {
			cur, healthy, err = c.holdFailover(ctx, cur, cs)
			l = c.links[cur]
		}
		if ctx.Err() != nil || c.stopped() {
			return nil
		}
		if done, err := w.after(l, healthy, err); done {
			return err
		}
		if !healthy {
			// This server failed: the next attempt goes to the next one.
			cur = (cur + 1) % len(c.links)
		}
		if !w.wait(l, err) {
			return nil
		}
	}
}

// errMovedBack ends a session on a later server once the client is back
// on an earlier one.
var errMovedBack = errors.New("moved back to a preferred server")

// served is a session being served in a goroutine of its own: ended is
// closed when it has ended, and then healthy and err say how.
type served struct {
	ended   chan struct{}
	healthy bool
	err     error
}

func serveAsync(ctx context.Context, l *link, cs *clientSession) *served {
	s := &served{ended: make(chan struct{})}
	go func() { // joined through ended
		s.healthy, s.err = l.serve(ctx, cs)
		close(s.ended)
	}()
	return s
}

// holdFailover serves cs, a session with c.links[idx], until it ends.
// While idx is not the first server, it tries the earlier ones every
// reconnect.max; when one logs the client in, that session takes over
// and the old one retires: it drains (no new visitors; live ones go on
// for up to shutdown_timeout) in the background. It returns the index of
// the server whose session ended last, whether that session was healthy,
// and why it ended.
func (c *Client) holdFailover(ctx context.Context, idx int, cs *clientSession) (int, bool, error) {
	for {
		s := serveAsync(ctx, c.links[idx], cs)
		next, ncs := c.tryPreferred(ctx, idx, s.ended)
		if ncs == nil {
			<-s.ended
			return idx, s.healthy, s.err
		}
		c.log.Info("moved back to a preferred server", "server", c.links[next].addr, "from", c.links[idx].addr)
		cs.retire()
		c.wg.Go(func() { <-s.ended })
		idx, cs = next, ncs
	}
}

// tryPreferred tries the servers before idx, in order, every
// reconnect.max, and returns the first that logs the client in, with its
// session; nil once ended is closed (the current session is over) or the
// client stops. The first server has none before it.
func (c *Client) tryPreferred(ctx context.Context, idx int, ended <-chan struct{}) (int, *clientSession) {
	if idx == 0 {
		return 0, nil
	}
	t := time.NewTicker(c.opts.Reconnect.Max)
	defer t.Stop()
	for {
		select {
		case <-ended:
			return 0, nil
		case <-c.stopping.Done():
			return 0, nil
		case <-ctx.Done():
			return 0, nil
		case <-t.C:
		}
		for p := range idx {
			// A probe, not a reconnect: counted as one, it would make
			// gotunnel_reconnects_total climb every reconnect.max while
			// the client sits healthy on a later server.
			l := c.links[p]
			cs, err := l.open(ctx)
			if cs != nil {
				return p, cs
			}
			l.failed(err)
			c.log.Debug("preferred server still unreachable", "server", l.addr, "code", int(connectCode(err)), "err", err)
		}
	}
}

// sessions are the live sessions, one per server at most.
func (c *Client) sessions() []*clientSession {
	var out []*clientSession
	for _, l := range c.links {
		if cs := l.current(); cs != nil {
			out = append(out, cs)
		}
	}
	return out
}
