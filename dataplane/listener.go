package dataplane

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Handler serves one visitor connection. It owns visitor and must close it
// before it returns. ctx ends when the Listener closes.
type Handler func(ctx context.Context, visitor net.Conn)

// Options tune a Listener. The zero value works.
type Options struct {
	// MaxConns is how many visitor connections may be live at once; a
	// visitor beyond it is reset at once, never queued. 0: no limit.
	MaxConns int
	// Logger receives the listener's own lines (refused visitors, accept
	// errors); nil discards them.
	Logger *slog.Logger
	// Reset, when set, is told of each visitor reset at the door: because
	// the listener was offline, or because MaxConns were live. It must not
	// block.
	Reset func(offline bool)
	// Admit, when set, is asked about each visitor before anything else:
	// false resets the visitor at once, before the handler runs (no data
	// stream is opened), and is counted in Denied, not told to Reset. It
	// is called from the accept loop and must not block; with Header, from
	// the connection's own goroutine, on the address Header returned.
	Admit func(visitor net.Addr) bool
	// Header, when set, reads what a connection carries in front of the
	// visitor's own bytes (a load balancer's PROXY protocol header) and
	// returns the visitor: c itself when it carries nothing, or a
	// connection that names the address the header gave. It runs in the
	// connection's own goroutine and must bound its wait (a deadline on
	// c); an error resets c, counted in BadHeaders and logged at warn at
	// most once per 10 s. With Header, the door's order is: offline and
	// MaxConns at accept (a connection whose header is being read holds
	// its place, so that stalled ones are bounded too), then Header, then
	// Admit, then the handler.
	Header func(c net.Conn) (net.Conn, error)
}

// Listener serves visitors on one mapping's public port.
type Listener struct {
	// set in Serve
	ln      net.Listener
	handler Handler
	opts    Options
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // acceptLoop and every serveConn

	online   atomic.Bool
	refused  atomic.Int64   // visitors reset for MaxConns
	dropped  atomic.Int64   // visitors reset while offline
	denied   atomic.Int64   // visitors reset because Admit said no
	badHdr   atomic.Int64   // connections reset because Header failed
	warn     rate.Sometimes // the MaxConns warning, at most once per 10 s
	denyWarn rate.Sometimes // the Admit warning, at most once per 10 s
	hdrWarn  rate.Sometimes // the Header warning, at most once per 10 s

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

// Serve starts serving ln with h in a goroutine of its own and returns at
// once. The Listener owns ln: Close closes it. A new Listener is online.
func Serve(ln net.Listener, h Handler, opts Options) *Listener {
	l := &Listener{
		ln:       ln,
		handler:  h,
		opts:     opts,
		log:      opts.Logger,
		conns:    make(map[net.Conn]struct{}),
		warn:     rate.Sometimes{Interval: 10 * time.Second},
		denyWarn: rate.Sometimes{Interval: 10 * time.Second},
		hdrWarn:  rate.Sometimes{Interval: 10 * time.Second},
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.online.Store(true)
	l.wg.Go(l.acceptLoop)
	return l
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// SetOnline sets whether visitors are served. An offline listener keeps
// its port bound and resets each new visitor at once.
func (l *Listener) SetOnline(on bool) { l.online.Store(on) }

// Online reports whether visitors are served.
func (l *Listener) Online() bool { return l.online.Load() }

// Active is the number of live visitor connections.
func (l *Listener) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Refused is how many visitors were reset because MaxConns were live.
func (l *Listener) Refused() int64 { return l.refused.Load() }

// Dropped is how many visitors were reset because the listener was offline.
func (l *Listener) Dropped() int64 { return l.dropped.Load() }

// Denied is how many visitors were reset because Options.Admit refused
// them.
func (l *Listener) Denied() int64 { return l.denied.Load() }

// BadHeaders is how many connections were reset because Options.Header
// failed on them.
func (l *Listener) BadHeaders() int64 { return l.badHdr.Load() }

// Unbind stops accepting and frees the port at once, without waiting for
// anything; live visitors go on until Close.
func (l *Listener) Unbind() error {
	err := l.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Close frees the port, resets every live visitor connection, ends the
// handlers' ctx and waits for every goroutine the Listener started. It is
// safe to call more than once.
func (l *Listener) Close() error {
	err := l.Unbind()
	l.cancel()
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		Reset(c)
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

// Shutdown frees the port at once, lets live visitor connections end on
// their own until ctx ends, then closes as Close does. It returns ctx's
// error if it had to reset visitors.
func (l *Listener) Shutdown(ctx context.Context) error {
	err := l.Unbind()
	idle := make(chan struct{})
	go func() { // joined below
		l.wg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
		err = ctx.Err()
	}
	cerr := l.Close()
	<-idle
	if err != nil {
		return err
	}
	return cerr
}

func (l *Listener) acceptLoop() {
	for {
		c, err := Accept(l.ctx, l.ln, func(err error, retryIn time.Duration) {
			l.log.Warn("accept visitor", "port", l.port(), "err", err, "retry_in", retryIn.String())
		})
		if err != nil {
			return
		}
		l.admit(c)
	}
}

// admit starts a handler for c, or resets c when Options.Admit refuses
// it or the listener is offline, full or closed. With Options.Header,
// Admit is asked later, in serveConn.
func (l *Listener) admit(c net.Conn) {
	if l.opts.Header == nil && !l.allowed(c) {
		Reset(c)
		return
	}
	if !l.online.Load() {
		l.dropped.Add(1)
		l.log.Debug("visitor reset: mapping offline", "port", l.port(), "visitor", c.RemoteAddr().String())
		Reset(c)
		l.told(true)
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		Reset(c)
		return
	}
	if l.opts.MaxConns > 0 && len(l.conns) >= l.opts.MaxConns {
		l.mu.Unlock()
		n := l.refused.Add(1)
		l.warn.Do(func() {
			l.log.Warn("visitor reset: max_conns_per_mapping reached", "port", l.port(), "max", l.opts.MaxConns, "refused_total", n)
		})
		Reset(c)
		l.told(false)
		return
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	l.wg.Go(func() { l.serveConn(c) })
}

// told passes a reset at the door to Options.Reset.
func (l *Listener) told(offline bool) {
	if l.opts.Reset != nil {
		l.opts.Reset(offline)
	}
}

// allowed asks Options.Admit about v, and counts and logs a refusal.
func (l *Listener) allowed(v net.Conn) bool {
	if l.opts.Admit == nil || l.opts.Admit(v.RemoteAddr()) {
		return true
	}
	n := l.denied.Add(1)
	l.denyWarn.Do(func() {
		l.log.Warn("visitor reset: not allowed by allow_ips or deny_ips", "port", l.port(),
			"visitor", v.RemoteAddr().String(), "denied_total", n)
	})
	return false
}

func (l *Listener) serveConn(c net.Conn) {
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	v := c
	if l.opts.Header != nil {
		var ok bool
		if v, ok = l.readHeader(c); !ok || !l.allowed(v) {
			Reset(c)
			return
		}
		if !l.online.Load() { // it went offline while the header was read
			l.dropped.Add(1)
			Reset(c)
			l.told(true)
			return
		}
	}
	l.handler(l.ctx, v)
}

// readHeader runs Options.Header on c, and counts and logs a failure
// that is not the listener's own Close.
func (l *Listener) readHeader(c net.Conn) (net.Conn, bool) {
	v, err := l.opts.Header(c)
	if err == nil {
		return v, true
	}
	if l.ctx.Err() == nil {
		n := l.badHdr.Add(1)
		l.hdrWarn.Do(func() {
			l.log.Warn("visitor reset: no valid PROXY protocol header from a trusted proxy", "port", l.port(),
				"proxy", c.RemoteAddr().String(), "err", err, "bad_headers_total", n)
		})
	}
	return nil, false
}

func (l *Listener) port() int {
	if a, ok := l.ln.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}
