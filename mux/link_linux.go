//go:build linux

package mux

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// linkSizer sizes bulk frames and the kernel's unsent budget
// (TCP_NOTSENT_LOWAT) by the connection's drain rate: the bytes written to
// the socket per unit of time while writers wait for a bulk slot. Then
// the connection is backlogged: a write returns only once the kernel's
// unsent bytes fell below the budget, so what goes in is what the path
// takes, wherever its bottleneck is. (The kernel's own estimates do not
// see a bottleneck beyond a loopback hop, such as a proxy that reads
// slowly: TCP_INFO's delivery rate stays at its last burst while the
// receive window is shut.) A sample is taken at most every sampleEvery,
// over an interval that one backlog spanned from end to end.
//
//	frame  = rate × frameTime,  within minFrame..maxFrame
//	unsent = rate × unsentTime, within minUnsent..the NotSentLowat option
//
// On loopback or a LAN the rate is gigabytes a second and both stay at
// their maxima; at 20 Mbit/s a frame is 5,000 bytes (2 ms on the wire)
// and the kernel holds 16 KiB, so a small frame waits a few milliseconds.
type linkSizer struct {
	raw       syscall.RawConn
	written   func() int64 // bytes written to the connection so far
	maxUnsent int          // the NotSentLowat option: the budget's ceiling

	frame atomic.Int64 // bytes
	last  atomic.Int64 // UnixNano of the last sample

	mu     sync.Mutex // one sampler at a time; guards the fields below
	mark   int64      // written at the last sample
	unsent int        // the budget set
}

// newLinkSizer returns a sizer for c's TCP connection (under TLS too), or
// nil when c is not TCP or the budget is off (lowat <= 0). written counts
// the bytes written to c.
func newLinkSizer(c net.Conn, lowat int, written func() int64) *linkSizer {
	raw := rawTCP(c)
	if raw == nil || lowat <= 0 {
		return nil
	}
	l := &linkSizer{raw: raw, written: written, maxUnsent: lowat, unsent: lowat}
	l.frame.Store(maxFrame)
	return l
}

func (l *linkSizer) frameSize() int { return int(l.frame.Load()) }

// sample measures the drain rate and resizes, unless it did within
// sampleEvery. The caller is a writer that waits, in a backlog that began
// at since: the interval since the last sample counts only if the backlog
// spans it.
func (l *linkSizer) sample(since time.Time) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(sampleEvery) || !l.mu.TryLock() {
		return
	}
	defer l.mu.Unlock()
	l.last.Store(now)
	w := l.written()
	bytes := w - l.mark
	l.mark = w
	if since.UnixNano() > last || bytes <= 0 {
		return // the first sample of a backlog: a baseline only
	}
	rate := uint64(float64(bytes) / time.Duration(now-last).Seconds())
	frame, unsent := linkSizes(rate, l.maxUnsent)
	l.frame.Store(int64(frame))
	if d := unsent - l.unsent; d*4 >= l.unsent || -d*4 >= l.unsent { // a quarter at least: no setsockopt per wobble
		l.unsent = unsent
		_ = l.raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, unsent)
		})
	}
}
