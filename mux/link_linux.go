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
// the socket per unit of time while it is backlogged, that is while the
// kernel holds at least backlogBytes unsent (TCP_INFO's notsent bytes) at
// both ends of the interval. Then a write returns only as the path
// takes bytes, so what goes in is what the path drains, wherever its
// bottleneck is. (The kernel's own rate estimates do not see a bottleneck
// beyond a loopback hop, such as a proxy that reads slowly: TCP_INFO's
// delivery rate stays at its last burst while the receive window is
// shut.) Bulk writers sample it, at most every sampleEvery; a sample that
// finds the kernel holding nothing back doubles both sizes instead, so
// that a path that got faster is not held to its old sizes.
//
//	frame  = rate × frameTime,  within minFrame..maxFrame
//	unsent = rate × unsentTime, within minUnsent..the NotSentLowat option
//
// On loopback or a LAN the kernel is rarely backlogged, the rate is
// gigabytes a second when it is, and both stay at their maxima; at 20
// Mbit/s a frame is 5,000 bytes (2 ms on the wire) and the kernel holds
// 10,000 (4 ms), so a small frame waits a few milliseconds.
type linkSizer struct {
	raw       syscall.RawConn
	written   func() int64 // bytes written to the connection so far
	maxUnsent int          // the NotSentLowat option: the budget's ceiling

	frame atomic.Int64 // bytes
	last  atomic.Int64 // UnixNano of the last sample

	mu      sync.Mutex // one sampler at a time; guards the fields below
	mark    int64      // written at the last sample
	backlog bool       // the last sample found the kernel backlogged
	unsent  int        // the budget set
}

// backlogBytes unsent in the kernel mean the path, not the writer, sets
// the pace: a fast path sends what it is given at once.
const backlogBytes = 1 << 10

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
// sampleEvery.
func (l *linkSizer) sample() {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(sampleEvery) || !l.mu.TryLock() {
		return
	}
	defer l.mu.Unlock()
	l.last.Store(now)
	var info *unix.TCPInfo
	var err error
	if cerr := l.raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil {
		return
	}
	w := l.written()
	bytes, was := w-l.mark, l.backlog
	l.mark, l.backlog = w, info.Notsent_bytes >= backlogBytes
	var frame, unsent int
	switch {
	case !l.backlog:
		// A bulk writer runs and the kernel holds nothing back: the path
		// is faster than the sizes; double them, up to the maxima (a slow
		// path backlogs again at once and is measured).
		frame, unsent = min(2*l.frameSize(), maxFrame), min(2*l.unsent, l.maxUnsent)
	case !was || bytes <= 0:
		return // not backlogged from end to end: no rate yet
	default:
		frame, unsent = linkSizes(uint64(float64(bytes)/time.Duration(now-last).Seconds()), l.maxUnsent)
	}
	l.frame.Store(int64(frame))
	if d := unsent - l.unsent; d*4 >= l.unsent || -d*4 >= l.unsent { // a quarter at least: no setsockopt per wobble
		l.unsent = unsent
		_ = l.raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, unsent)
		})
	}
}
