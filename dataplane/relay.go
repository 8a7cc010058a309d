package dataplane

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultBufSize is the size of the default pool's copy buffers, one per
// direction while bytes flow. It is also the largest write to a data
// stream, so the largest yamux data frame: 32 KiB keeps a new visitor's
// first frame from waiting long behind bulk transfers on a slow uplink
// (docs/performance.md), and matches io.Copy's own default.
const DefaultBufSize = 32 << 10

// Pool holds copy buffers of one size for relays.
type Pool struct{ p sync.Pool }

// NewPool returns a pool of size-byte buffers.
func NewPool(size int) *Pool {
	p := &Pool{}
	p.p.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return p
}

func (p *Pool) get() *[]byte  { return p.p.Get().(*[]byte) }
func (p *Pool) put(b *[]byte) { p.p.Put(b) }

var defaultPool = NewPool(DefaultBufSize)

// Result tells what a relay moved and why it ended.
type Result struct {
	AToB int64 // bytes read from a and written to b
	BToA int64 // bytes read from b and written to a
	// Err is the first error that aborted the relay, or nil when both
	// directions ended with a clean EOF.
	Err error
}

// Aborter is a connection with its own way to abort. A data stream cannot
// carry a reset, so its Abort tells the peer another way and leaves the
// stream readable: the relay then drains it until the peer closes, so the
// peer's writes never block on a reader that is gone.
type Aborter interface {
	Abort()
}

// Traffic counts the bytes relays move, as they move them, so that a
// long transfer shows in every reading and not only at its end, and the
// time they were held back by their Limits. One Traffic may be shared by
// many relays (all the visitors of a mapping); the zero value counts
// from zero.
type Traffic struct {
	aToB, bToA         atomic.Int64
	waitAToB, waitBToA atomic.Int64 // nanoseconds
}

// AToB is the bytes read from a and written to b so far.
func (t *Traffic) AToB() int64 { return t.aToB.Load() }

// BToA is the bytes read from b and written to a so far.
func (t *Traffic) BToA() int64 { return t.bToA.Load() }

// WaitAToB is how long the relays waited on their limiters before
// writing to b, summed over the relays (two held for a second each count
// two seconds). Zero while no limit holds them back: a limiter with
// tokens to spare adds nothing, and a relay without Limits never looks.
func (t *Traffic) WaitAToB() time.Duration { return time.Duration(t.waitAToB.Load()) }

// WaitBToA is WaitAToB for the bytes written to a.
func (t *Traffic) WaitBToA() time.Duration { return time.Duration(t.waitBToA.Load()) }

// Relay copies a to b and b to a until both directions are done, then
// closes both. When one direction reads EOF it half-closes the far side
// (CloseWrite) and the other direction goes on. On any read or write error,
// or when ctx ends, it aborts: each end that is an Aborter is aborted its
// own way, every other end is reset (a TCP end gets SO_LINGER 0, so that
// its peer cannot take a truncated transfer for a complete one); then each
// direction drains what its source still delivers, until the source ends.
//
// Relay owns a and b: they are closed when it returns. Its buffers come
// from a pool of DefaultBufSize; see RelayWith.
func Relay(ctx context.Context, a, b net.Conn) Result {
	return RelayWith(ctx, a, b, defaultPool, nil, Limits{})
}

// RelayWith is Relay with buffers from pool, adding every byte it writes
// to t as it writes it (nil: no live count), and waiting on lim's
// limiters before each write.
func RelayWith(ctx context.Context, a, b net.Conn, pool *Pool, t *Traffic, lim Limits) Result {
	if t == nil {
		t = &Traffic{}
	}
	r := &relay{a: a, b: b, pool: pool, traffic: t, lim: lim, aborted: make(chan struct{}), stopWaits: func() {}}
	if lim.active() { // most relays have no limit: no context for them
		r.waitCtx, r.stopWaits = context.WithCancel(ctx)
		defer r.stopWaits()
	}
	stop := context.AfterFunc(ctx, func() { r.abort(context.Cause(ctx)) })
	var wg sync.WaitGroup
	wg.Go(r.copyBToA)
	r.res.AToB = r.copyHalf(b, a, &t.aToB, &t.waitAToB, lim.AToB)
	wg.Wait()
	stop()
	// stop does not wait for an abort that ctx already started: Do does,
	// and keeps any later one from writing res.
	r.once.Do(func() {})
	_ = a.Close()
	_ = b.Close()
	return r.res
}

type relay struct {
	a, b      net.Conn
	pool      *Pool
	traffic   *Traffic
	lim       Limits
	waitCtx   context.Context    // the limiters' waits; ends at the abort; nil without limiters
	stopWaits context.CancelFunc // ends waitCtx; a no-op without limiters
	once      sync.Once
	aborted   chan struct{} // closed by abort
	res       Result        // AToB owned by Relay's goroutine, BToA by copyBToA, Err by once
}

func (r *relay) copyBToA() {
	r.res.BToA = r.copyHalf(r.a, r.b, &r.traffic.bToA, &r.traffic.waitBToA, r.lim.BToA)
}

// waiter is an end that can wait until it has something to read without
// a buffer: a data stream (package mux), or a TCP connection. An error is
// the end's read error, found while waiting.
type waiter interface {
	WaitRead() error
}

func waiterOf(c net.Conn) waiter {
	if w, ok := c.(waiter); ok {
		return w
	}
	return newTCPWaiter(c)
}

// copyHalf copies src to dst; at src's EOF it half-closes dst, on an
// error it aborts the relay. Once the relay is aborted it drains src until
// src ends. A pooled buffer is held only while bytes flow: when a read
// drains src, the buffer goes back to the pool and the next wait happens
// without it. count gets the bytes written, waited the time lims held
// them back.
func (r *relay) copyHalf(dst, src net.Conn, count, waited *atomic.Int64, lims []*rate.Limiter) int64 {
	n, err := r.copyLoop(dst, src, waiterOf(src), count, waited, lims)
	if err == nil {
		err = closeWrite(dst)
	}
	if err != nil {
		r.abort(err)
	}
	select {
	case <-r.aborted:
		_, _ = io.Copy(io.Discard, readerOnly{src}) // io.Discard brings its own buffer
	default:
	}
	return n
}

// copyLoop copies until src's EOF (nil) or an error, adding what it
// writes to count. Before each write it waits on every limiter in lims.
func (r *relay) copyLoop(dst, src net.Conn, w waiter, count, waited *atomic.Int64, lims []*rate.Limiter) (int64, error) {
	var bp *[]byte
	defer func() {
		if bp != nil {
			r.pool.put(bp)
		}
	}()
	var n int64
	for {
		if bp == nil {
			if w != nil {
				if err := w.WaitRead(); err != nil {
					return n, err
				}
			}
			bp = r.pool.get()
		}
		buf := *bp
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := r.write(dst, buf[:nr], lims, count, waited)
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		switch {
		case errors.Is(rerr, io.EOF):
			return n, nil
		case rerr != nil:
			return n, rerr
		case nr < len(buf) && w != nil:
			r.pool.put(bp)
			bp = nil
		}
	}
}

// write writes p to dst, adding what it writes to count. With limiters,
// it writes p in pieces no larger than the smallest burst and waits on
// every limiter before each piece (waitLimits), so that a slow limit trickles
// bytes out rather than holding a whole buffer back.
func (r *relay) write(dst net.Conn, p []byte, lims []*rate.Limiter, count, waited *atomic.Int64) (int, error) {
	piece := len(p)
	for _, l := range lims {
		if l != nil {
			piece = min(piece, max(l.Burst(), 1))
		}
	}
	n := 0
	for len(p) > 0 {
		k := min(piece, len(p))
		if len(lims) > 0 {
			if err := waitLimits(r.waitCtx, lims, k, waited); err != nil {
				return n, err
			}
		}
		nw, err := dst.Write(p[:k])
		n += nw
		count.Add(int64(nw))
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// abort records the first error and aborts both ends.
func (r *relay) abort(err error) {
	r.once.Do(func() {
		r.stopWaits()
		r.res.Err = err
		abortConn(r.a)
		abortConn(r.b)
		close(r.aborted)
	})
}

func abortConn(c net.Conn) {
	if a, ok := c.(Aborter); ok {
		a.Abort()
		return
	}
	Reset(c)
}

// Reset closes c at once; a TCP connection is reset (RST) instead of shut
// down with FIN, so that the peer sees an abort, not a clean end.
func Reset(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}

// closeWrite half-closes c, or closes it when it cannot half-close.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

type readerOnly struct{ io.Reader }
