package mux

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Errors reported by sessions and streams.
var (
	// ErrSessionClosed is returned by a stream's Read when the session died
	// before the peer closed the stream: the data that reached EOF is
	// truncated. It is also the Cause of a session that ended normally.
	ErrSessionClosed = errors.New("mux: session closed")
	// ErrStrayStreams is the Cause of a server session whose client opened
	// more than Options.MaxStrayStreams streams besides its control stream.
	ErrStrayStreams = errors.New("mux: client opened streams besides control")
	// ErrRole is returned when a side calls a method of the other side, or
	// opens or accepts the control stream twice.
	ErrRole = errors.New("mux: wrong stream role")
)

// Defaults applied to zero Options fields.
const (
	DefaultWindowSize        = 1 << 20
	DefaultAcceptBacklog     = 256
	DefaultWriteTimeout      = 75 * time.Second
	DefaultStreamOpenTimeout = 75 * time.Second
	DefaultMaxStrayStreams   = 4
	DefaultNotSentLowat      = 128 << 10
)

// Options tune a session. The zero value works.
//
// A zero field takes the default its Default constant names (see
// WithDefaults); the zero Options work.
type Options struct {
	// Logger receives yamux's own log lines; nil discards them.
	Logger *slog.Logger
	// WindowSize is the most bytes a stream may have in flight towards this
	// side (yamux MaxStreamWindowSize); it caps one stream's throughput at
	// about WindowSize / round-trip time. Minimum 256 KiB.
	WindowSize uint32
	// AcceptBacklog is how many opened streams may wait for Accept. Both
	// sides must use the same value.
	AcceptBacklog int
	// WriteTimeout bounds how long one frame may wait to be written to the
	// connection (yamux ConnectionWriteTimeout). It is a safety valve well
	// above the heartbeat timeout: on a slow uplink frames queue behind bulk
	// data, and the heartbeat, not this, decides that a session is dead.
	WriteTimeout time.Duration
	// StreamCloseTimeout, when positive, bounds how long a stream closed on
	// this side waits for the peer's close before yamux resets it. 0 (the
	// default) means never: a close here is a half-close, and the other
	// direction may rightly go on for hours (a download after the request).
	// Aborted streams are ended by the control protocol instead.
	StreamCloseTimeout time.Duration
	// StreamOpenTimeout bounds how long an opened stream waits for the
	// peer's acknowledgement before yamux declares the whole session dead.
	StreamOpenTimeout time.Duration
	// KeepAlive, when positive, turns on yamux's own ping at this interval.
	// gotunnel-mux leaves it off (0) and uses the control heartbeat, which
	// counts any byte read as life; see docs/protocol.md.
	KeepAlive time.Duration
	// MaxStrayStreams is how many client-opened streams beyond the control
	// stream a server session closes before it cancels its Context with
	// ErrStrayStreams. 0: DefaultMaxStrayStreams; negative: none tolerated.
	MaxStrayStreams int
	// NotSentLowat caps the bytes waiting unsent in the kernel's send
	// buffer of a TCP connection (TCP_NOTSENT_LOWAT), so that on a slow
	// uplink a heartbeat or a new stream's first frame does not queue behind
	// megabytes of bulk data. Negative: leave the kernel's default.
	NotSentLowat int
}

// WithDefaults returns o with each zero field that has a default set to
// it (the Default constants), as Client and Server apply them.
func (o Options) WithDefaults() Options {
	o.Logger = cmp.Or(o.Logger, discard)
	o.WindowSize = cmp.Or(o.WindowSize, DefaultWindowSize)
	o.AcceptBacklog = cmp.Or(o.AcceptBacklog, DefaultAcceptBacklog)
	o.WriteTimeout = cmp.Or(o.WriteTimeout, DefaultWriteTimeout)
	o.StreamOpenTimeout = cmp.Or(o.StreamOpenTimeout, DefaultStreamOpenTimeout)
	o.MaxStrayStreams = cmp.Or(o.MaxStrayStreams, DefaultMaxStrayStreams)
	o.NotSentLowat = cmp.Or(o.NotSentLowat, DefaultNotSentLowat)
	return o
}

// yamuxConfig is yamux's configuration for o, which has its defaults.
func (o *Options) yamuxConfig() (*yamux.Config, error) {
	c := yamux.DefaultConfig()
	c.LogOutput = nil
	c.Logger = yamuxLogger{o.Logger}
	c.MaxStreamWindowSize = o.WindowSize
	c.AcceptBacklog = o.AcceptBacklog
	c.ConnectionWriteTimeout = o.WriteTimeout
	c.StreamCloseTimeout = o.StreamCloseTimeout
	c.StreamOpenTimeout = o.StreamOpenTimeout
	c.EnableKeepAlive = o.KeepAlive > 0
	if o.KeepAlive > 0 {
		c.KeepAliveInterval = o.KeepAlive
	}
	if err := yamux.VerifyConfig(c); err != nil {
		return nil, fmt.Errorf("mux: %w", err)
	}
	return c, nil
}

// Session is one yamux session over one connection.
type Session struct {
	// set in newSession
	ys       *yamux.Session
	conn     *conn
	book     *book      // what inbound frame headers say; see frames.go
	sched    *scheduler // who writes next; see sched.go
	client   bool
	maxStray int
	log      *slog.Logger
	ctx      context.Context
	cancel   context.CancelCauseFunc
	wg       sync.WaitGroup

	controlTaken atomic.Bool
	strays       atomic.Int64
}

// Client runs the client side of a session over c. The session owns c from
// now on: Close closes it.
func Client(c net.Conn, opts Options) (*Session, error) {
	return newSession(c, opts, true)
}

// Server runs the server side of a session over c. The session owns c from
// now on: Close closes it.
func Server(c net.Conn, opts Options) (*Session, error) {
	return newSession(c, opts, false)
}

func newSession(c net.Conn, opts Options, client bool) (*Session, error) {
	opts = opts.WithDefaults()
	cfg, err := opts.yamuxConfig()
	if err != nil {
		return nil, err
	}
	setNotSentLowat(c, opts.NotSentLowat)
	maxStray := max(opts.MaxStrayStreams, 0)
	b := newBook(!client, maxStray)
	w := newConn(c, b)
	s := &Session{
		conn:     w,
		book:     b,
		sched:    &scheduler{link: newLinkSizer(c, opts.NotSentLowat, w.written.Load), progress: w.progress},
		client:   client,
		maxStray: maxStray,
		log:      opts.Logger,
	}
	w.room = s.sched.queueRoom
	if client {
		s.ys, err = yamux.Client(s.conn, cfg)
	} else {
		s.ys, err = yamux.Server(s.conn, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("mux: %w", err)
	}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	s.wg.Go(s.watch)
	return s, nil
}

// watch ends the session's Context when yamux shuts the session down,
// with the read error that killed the connection when there was one.
func (s *Session) watch() {
	select {
	case <-s.ys.CloseChan():
		s.cancel(s.closedErr())
	case <-s.ctx.Done():
	}
}

// closedErr is ErrSessionClosed, wrapping the connection's read error
// unless the connection was closed on purpose or ended cleanly.
func (s *Session) closedErr() error {
	err := s.conn.err()
	if err == nil || errors.Is(err, net.ErrClosed) {
		return ErrSessionClosed
	}
	return fmt.Errorf("%w: %w", ErrSessionClosed, err)
}

// ReadErr is the first error a read of the connection returned (io.EOF
// when the peer closed it), or nil while it reads fine. A failed TLS
// handshake alert, a reset, a deadline show up here, not in stream reads.
func (s *Session) ReadErr() error { return s.conn.err() }

// Context is done when the session has ended or broken the stream-role
// rule; context.Cause tells which (ErrSessionClosed, ErrStrayStreams).
func (s *Session) Context() context.Context { return s.ctx }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.ys.CloseChan() }

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool { return s.ys.IsClosed() }

// LastRead is when a byte was last read from the connection: any frame, not
// only a heartbeat, proves the peer alive.
func (s *Session) LastRead() time.Time { return s.conn.lastRead() }

// NumStreams is how many streams are open, control included.
func (s *Session) NumStreams() int { return s.ys.NumStreams() }

// RemoteAddr is the peer's address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// LocalAddr is this side's address.
func (s *Session) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// Trust lifts the limits on a server session's peer that has not logged
// in: until then it may send at most UntrustedBytes and open no stream but
// the control stream, or the session ends (ErrUntrusted, ErrStrayStreams)
// before yamux buffers more. Call it once the peer has authenticated,
// before answering it. A client session trusts its server from the start.
func (s *Session) Trust() { s.book.trusted.Store(true) }

// GoAway tells the peer to open no more streams; open streams go on.
func (s *Session) GoAway() error { return s.ys.GoAway() }

// Close ends the session and its connection, and waits for the goroutines
// the session started. Blocked stream reads return ErrSessionClosed. It is
// safe to call more than once and from any goroutine.
func (s *Session) Close() error {
	err := s.ys.Close()
	s.cancel(ErrSessionClosed)
	s.wg.Wait()
	return err
}

// OpenControl opens the control stream. Client side, once.
func (s *Session) OpenControl() (*Stream, error) {
	if !s.client || !s.controlTaken.CompareAndSwap(false, true) {
		return nil, ErrRole
	}
	return s.open(true)
}

// AcceptControl waits for the client's first stream, the control stream,
// until ctx ends. Server side, once. From then on, any further stream the
// client opens is closed at once and counted.
func (s *Session) AcceptControl(ctx context.Context) (*Stream, error) {
	if s.client || !s.controlTaken.CompareAndSwap(false, true) {
		return nil, ErrRole
	}
	ys, err := s.ys.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, s.wrapErr(err)
	}
	s.wg.Go(s.rejectLoop)
	return s.wrap(ys, true), nil
}

func (s *Session) wrap(ys *yamux.Stream, control bool) *Stream {
	return &Stream{Stream: ys, sess: s, end: s.book.end(ys.StreamID()), control: control}
}

// rejectLoop closes every client-opened stream after the control stream.
func (s *Session) rejectLoop() {
	for {
		ys, err := s.ys.AcceptStream()
		if err != nil {
			return
		}
		s.book.closedHere(ys.StreamID())
		_ = ys.Close()
		n := s.strays.Add(1)
		s.log.Warn("stream opened by client closed", "stream", ys.StreamID(), "count", n)
		if n > int64(s.maxStray) {
			s.cancel(ErrStrayStreams)
		}
	}
}

// Open opens a data stream. Server side.
func (s *Session) Open() (*Stream, error) {
	if s.client {
		return nil, ErrRole
	}
	return s.open(false)
}

func (s *Session) open(control bool) (*Stream, error) {
	ys, err := s.ys.OpenStream()
	if err != nil {
		return nil, s.wrapErr(err)
	}
	return s.wrap(ys, control), nil
}

// Accept waits for the next data stream opened by the server. Client side.
func (s *Session) Accept() (*Stream, error) {
	if !s.client {
		return nil, ErrRole
	}
	ys, err := s.ys.AcceptStream()
	if err != nil {
		return nil, s.wrapErr(err)
	}
	return s.wrap(ys, false), nil
}

func (s *Session) wrapErr(err error) error {
	if errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, io.EOF) {
		return ErrSessionClosed
	}
	return fmt.Errorf("mux: %w", err)
}
