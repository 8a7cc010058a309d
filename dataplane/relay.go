package dataplane

import (
	"io"
	"net"
	"sync"
)

// BufSize is the size of the pooled copy buffers, one per direction while
// bytes flow. 32 KiB keeps a yamux data frame well under a slow uplink's
// per-write budget and matches io.Copy's own default.
const BufSize = 32 << 10

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, BufSize)
	return &b
}}

// Result tells what a relay moved and why it ended.
type Result struct {
	AToB int64 // bytes read from a and written to b
	BToA int64 // bytes read from b and written to a
	// Err is the first error that aborted the relay, or nil when both
	// directions ended with a clean EOF.
	Err error
}

// Relay copies a to b and b to a until both directions are done, then
// closes both. When one direction reads EOF it half-closes the far side
// (CloseWrite) and the other direction goes on. On any read or write error
// it aborts: both ends are closed at once, and a TCP end is reset
// (SO_LINGER 0) so that its peer cannot take a truncated transfer for a
// complete one.
//
// Relay owns a and b: they are closed when it returns.
func Relay(a, b net.Conn) Result {
	r := &relay{a: a, b: b}
	var wg sync.WaitGroup
	wg.Go(r.copyBToA)
	r.res.AToB = r.copyHalf(b, a)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
	return r.res
}

type relay struct {
	a, b net.Conn
	once sync.Once
	res  Result // AToB owned by Relay's goroutine, BToA by copyBToA, Err by once
}

func (r *relay) copyBToA() { r.res.BToA = r.copyHalf(r.a, r.b) }

// copyHalf copies src to dst with a pooled buffer; at src's EOF it
// half-closes dst, on an error it aborts the relay.
func (r *relay) copyHalf(dst, src net.Conn) int64 {
	bp := bufPool.Get().(*[]byte)
	// Hide ReadFrom/WriteTo: for a stream on one side the net package's
	// fallbacks would allocate a fresh buffer per call.
	n, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *bp)
	bufPool.Put(bp)
	if err == nil {
		err = closeWrite(dst)
	}
	if err != nil {
		r.abort(err)
	}
	return n
}

// abort records the first error and resets both ends.
func (r *relay) abort(err error) {
	r.once.Do(func() {
		r.res.Err = err
		Reset(r.a)
		Reset(r.b)
	})
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

type writerOnly struct{ io.Writer }
