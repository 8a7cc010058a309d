package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A link is a user-space shaped network link on loopback: every
// connection forwarded through it (by any of its listeners) shares one
// rate, one delay and one queue per direction, as the flows of one
// access line do. The tunnel's single connection and a direct test's
// several connections therefore meet the same bottleneck.
//
// Each direction is a lane: bytes read from the sending socket enter one
// FIFO queue of at most a configured size (a router's buffer); one
// serializer releases them at the rate in packets of at most mtu bytes (a
// token bucket whose burst is one packet); each released packet reaches
// the receiving socket delay after its transmission ended (propagation).
// When the queue is full the reading side stops reading, so TCP's own
// flow control pushes back to the sender instead of the link dropping.
// An end of stream passes through the queue like a packet and becomes a
// CloseWrite on the other side; a reset becomes a reset.
//
// Connection setup is not delayed: the shaper accepts and dials at once.
type link struct {
	up, down *lane // up: from the side that dials the shaper towards the target
	done     chan struct{}
	wg       sync.WaitGroup

	mu     sync.Mutex
	closed bool
	lns    []net.Listener
	pipes  map[*pipe]struct{}
}

// laneConfig is one direction of a link.
type laneConfig struct {
	rate  float64       // bytes per second
	delay time.Duration // one way, added after a packet's transmission
	queue int           // bytes waiting for transmission, at most
}

const (
	mtu = 1500 // the largest packet a lane transmits at once; the token bucket's burst
	// readSize is the most one read takes from a sending socket: a reader
	// blocked on a full queue holds at most this much outside the queue.
	readSize = 8 << 10
	// sockBuf is the kernel receive buffer of the shaper's sockets: bytes
	// the kernel has acknowledged but the shaper has not read yet sit in
	// front of the queue, where a real link has none, so keep it small.
	// Each connection has one of its own before the shared queue: with
	// 8 KiB (the kernel gives 16) the tunnel's one connection queued its
	// echo behind 16 KiB that a direct connection never waits for, 13 ms
	// at 10 Mbit/s. 2 KiB is about the kernel's least (it gives 4.6).
	sockBuf = 2 << 10
	// maxLag is how far a busy serializer may catch up after waking late:
	// the rate holds on average even when timers fire late under load.
	maxLag = 5 * time.Millisecond
)

func newLink(up, down laneConfig) *link {
	l := &link{up: newLane(up), down: newLane(down), done: make(chan struct{}), pipes: map[*pipe]struct{}{}}
	l.wg.Go(func() { l.up.run(l.done) })
	l.wg.Go(func() { l.down.run(l.done) })
	return l
}

// forward listens on 127.0.0.1 and forwards each connection accepted
// there to target through the link; it returns the address to dial.
func (l *link) forward(target string) (string, error) {
	lc := net.ListenConfig{Control: smallRcvbuf}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = ln.Close()
		return "", net.ErrClosed
	}
	l.lns = append(l.lns, ln)
	l.wg.Go(func() { l.accept(ln, target) })
	return ln.Addr().String(), nil
}

func (l *link) accept(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		l.wg.Go(func() { l.connect(c.(*net.TCPConn), target) })
	}
}

func (l *link) connect(a *net.TCPConn, target string) {
	d := net.Dialer{Timeout: 5 * time.Second, Control: smallRcvbuf}
	c, err := d.Dial("tcp", target)
	if err != nil {
		_ = a.SetLinger(0) // the dialer sees the refusal as a reset
		_ = a.Close()
		return
	}
	b := c.(*net.TCPConn)
	p := &pipe{l: l, a: a, b: b, done: make(chan struct{})}
	p.left.Store(2)
	p.up = newHalf(p, l.up, a, b)
	p.down = newHalf(p, l.down, b, a)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = a.Close()
		_ = b.Close()
		return
	}
	l.pipes[p] = struct{}{}
	for _, h := range []*half{p.up, p.down} {
		l.wg.Go(h.read)
		l.wg.Go(h.write)
	}
}

// close stops the listeners, closes every forwarded connection and
// returns when every goroutine of the link has ended.
func (l *link) close() {
	l.mu.Lock()
	l.closed = true
	lns := l.lns
	pipes := make([]*pipe, 0, len(l.pipes))
	for p := range l.pipes {
		pipes = append(pipes, p)
	}
	l.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, p := range pipes {
		p.shut(false)
	}
	l.up.shutdown()
	l.down.shutdown()
	close(l.done)
	l.wg.Wait()
}

// sent is the number of bytes the link has transmitted, both directions.
func (l *link) sent() int64 { return l.up.sent.Load() + l.down.sent.Load() }

// waitQuiet waits until the link has carried at most a few small packets
// for quiet (the bytes of a finished test have drained), or for at most
// limit.
func (l *link) waitQuiet(quiet, limit time.Duration) {
	end := time.Now().Add(limit)
	mark, at := l.sent(), time.Now()
	for time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond)
		if n := l.sent(); n-mark > 2*mtu {
			mark, at = n, time.Now()
		} else if time.Since(at) >= quiet {
			return
		}
	}
}

// smallRcvbuf sets the kernel receive buffer of a shaper socket before it
// connects (accepted sockets inherit the listener's).
func smallRcvbuf(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, sockBuf)
	})
	return errors.Join(err, serr)
}

// A lane is one direction of a link: its queue and serializer.
type lane struct {
	laneConfig
	sent atomic.Int64 // bytes transmitted

	mu       sync.Mutex
	nonempty *sync.Cond // the serializer waits for a packet
	room     *sync.Cond // readers wait for room in the queue or under their half's cap
	q        []*packet
	queued   int // bytes in q and in transmission
	closed   bool
}

type packet struct {
	h     *half
	b     []byte
	eof   bool // the sender ended its stream after b
	reset bool // ... by a reset, not a FIN
	due   time.Time
}

func newLane(c laneConfig) *lane {
	l := &lane{laneConfig: c}
	l.nonempty = sync.NewCond(&l.mu)
	l.room = sync.NewCond(&l.mu)
	return l
}

// tx is the transmission time of n bytes.
func (l *lane) tx(n int) time.Duration {
	return time.Duration(float64(n) / l.rate * float64(time.Second))
}

// push queues p, waiting while the queue is full or p's half has its cap
// of bytes on the way; false when the link or the connection closed.
func (l *lane) push(p *packet) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := p.h
	for !l.closed && !h.pipe.isShut() &&
		((l.queued > 0 && l.queued+len(p.b) > l.queue) || h.pending >= h.cap) {
		l.room.Wait()
	}
	if l.closed || h.pipe.isShut() {
		return false
	}
	l.q = append(l.q, p)
	l.queued += len(p.b)
	h.pending += len(p.b)
	l.nonempty.Signal()
	return true
}

// pop takes the next packet to transmit; idle tells that the lane had
// none when asked (the link was idle). nil when the lane shut down.
func (l *lane) pop() (p *packet, idle bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.q) == 0 && !l.closed {
		idle = true
		l.nonempty.Wait()
	}
	if l.closed {
		return nil, false
	}
	p = l.q[0]
	l.q[0] = nil
	l.q = l.q[1:]
	return p, idle
}

// run is the serializer: it transmits the queue's packets one after
// another at the rate and hands each to its connection's writer.
func (l *lane) run(done <-chan struct{}) {
	burst := l.tx(mtu)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var next time.Time // when the packet in transmission has been sent
	for {
		p, idle := l.pop()
		if p == nil {
			return
		}
		now := time.Now()
		// An idle link has saved up at most one packet's worth of
		// tokens; a busy one only the time its serializer woke late.
		credit := maxLag
		if idle {
			credit = burst
		}
		if earliest := now.Add(-credit); next.Before(earliest) {
			next = earliest
		}
		next = next.Add(l.tx(len(p.b)))
		sentAt := now // the tokens were there: it leaves now, never earlier
		if d := next.Sub(now); d > 0 {
			sentAt = next
			t.Reset(d)
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
		l.mu.Lock()
		l.queued -= len(p.b)
		l.room.Broadcast()
		l.mu.Unlock()
		l.sent.Add(int64(len(p.b)))
		p.due = sentAt.Add(l.delay)
		p.h.deliver(p)
	}
}

// release ends the packets' journey: their bytes no longer count against
// their half's cap.
func (l *lane) release(ps []*packet) {
	if len(ps) == 0 {
		return
	}
	l.mu.Lock()
	for _, p := range ps {
		p.h.pending -= len(p.b)
	}
	l.room.Broadcast()
	l.mu.Unlock()
}

// wake makes waiting readers look again (a connection shut).
func (l *lane) wake() {
	l.mu.Lock()
	l.room.Broadcast()
	l.mu.Unlock()
}

func (l *lane) shutdown() {
	l.mu.Lock()
	l.closed = true
	l.nonempty.Broadcast()
	l.room.Broadcast()
	l.mu.Unlock()
}

// A pipe is one forwarded connection: a (accepted) and b (dialed to the
// target), one half per direction.
type pipe struct {
	l        *link
	a, b     *net.TCPConn
	up, down *half
	done     chan struct{}
	once     sync.Once
	left     atomic.Int32 // halves that have not passed their end of stream yet
	shutDone atomic.Bool
}

func (p *pipe) isShut() bool { return p.shutDone.Load() }

// shut closes both sockets (with a reset if asked) and ends both halves.
func (p *pipe) shut(reset bool) {
	p.once.Do(func() {
		p.shutDone.Store(true)
		close(p.done)
		if reset {
			_ = p.a.SetLinger(0)
			_ = p.b.SetLinger(0)
		}
		_ = p.a.Close()
		_ = p.b.Close()
		p.l.up.wake()
		p.l.down.wake()
		p.l.mu.Lock()
		delete(p.l.pipes, p)
		p.l.mu.Unlock()
	})
}

// A half is one direction of a pipe: a reader from src into the lane and
// a writer of the lane's released packets into dst.
type half struct {
	pipe     *pipe
	lane     *lane
	src, dst *net.TCPConn
	// pending counts bytes read and not yet written (guarded by lane.mu);
	// at cap, the reader waits. It stands in for the receiver's window:
	// a receiver that stops reading stops its own sender, not the link.
	pending, cap int

	mu    sync.Mutex
	ready []*packet // transmitted, waiting for their due time
	dead  bool      // the writer has ended
	wake  chan struct{}
}

func newHalf(p *pipe, l *lane, src, dst *net.TCPConn) *half {
	bdp := int(l.rate * l.delay.Seconds())
	return &half{pipe: p, lane: l, src: src, dst: dst, cap: l.queue + 2*bdp + 64<<10, wake: make(chan struct{}, 1)}
}

func (h *half) read() {
	for {
		buf := make([]byte, readSize) // the packets keep slices of it until written
		n, err := h.src.Read(buf)
		for b := buf[:n]; len(b) > 0; {
			k := min(len(b), mtu)
			if !h.lane.push(&packet{h: h, b: b[:k:k]}) {
				return
			}
			b = b[k:]
		}
		if err != nil {
			h.lane.push(&packet{h: h, eof: true, reset: !errors.Is(err, io.EOF)})
			return
		}
	}
}

// deliver hands a transmitted packet to the writer.
func (h *half) deliver(p *packet) {
	h.mu.Lock()
	if h.dead {
		h.mu.Unlock()
		h.lane.release([]*packet{p})
		return
	}
	h.ready = append(h.ready, p)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *half) write() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	defer func() {
		h.mu.Lock()
		h.dead = true
		left := h.ready
		h.ready = nil
		h.mu.Unlock()
		h.lane.release(left)
	}()
	var batch []*packet
	var bufs net.Buffers
	for {
		h.mu.Lock()
		n := len(h.ready)
		var due time.Time
		if n > 0 {
			due = h.ready[0].due
		}
		h.mu.Unlock()
		if n == 0 {
			select {
			case <-h.wake:
				continue
			case <-h.pipe.done:
				return
			}
		}
		if d := time.Until(due); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-h.pipe.done:
				return
			}
		}
		// Everything due by now goes out in one write.
		now := time.Now()
		h.mu.Lock()
		k := 0
		for k < len(h.ready) && !h.ready[k].due.After(now) {
			k++
		}
		batch = append(batch[:0], h.ready[:k]...)
		clear(h.ready[:k])
		h.ready = h.ready[k:]
		h.mu.Unlock()
		bufs = bufs[:0]
		var end *packet
		for _, p := range batch {
			if len(p.b) > 0 {
				bufs = append(bufs, p.b)
			}
			if p.eof {
				end = p // always the half's last packet
			}
		}
		if len(bufs) > 0 {
			w := bufs // WriteTo consumes its receiver
			if _, err := w.WriteTo(h.dst); err != nil {
				h.lane.release(batch)
				h.pipe.shut(true)
				return
			}
		}
		h.lane.release(batch)
		clear(batch)
		if end != nil {
			if end.reset {
				h.pipe.shut(true)
			} else {
				_ = h.dst.CloseWrite()
				if h.pipe.left.Add(-1) == 0 {
					h.pipe.shut(false)
				}
			}
			return
		}
	}
}
