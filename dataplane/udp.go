package dataplane

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// MaxDatagram is the largest datagram a UDP mapping carries: the most its
// 2-byte length prefix can say (protocol.md 7.8), and more than an IPv4
// UDP datagram can hold. A larger one (an IPv6 jumbogram) is dropped and
// counted.
const MaxDatagram = 1<<16 - 1

// flowQueueBytes bounds the datagrams that wait in one flow for its relay:
// a datagram that would pass it is dropped, as a router drops when its
// queue is full, so that a flow whose stream is slow never holds up the
// socket's other flows.
const flowQueueBytes = 1 << 20

// flowQueueLen bounds the same in datagrams.
const flowQueueLen = 1024

// listenerQueueBytes bounds the datagrams queued in all the flows of one
// socket, so that many slow flows cannot hold more than this much memory.
const listenerQueueBytes = 16 << 20

// acceptBacklog bounds the new flows waiting for the accept loop; a
// datagram that would start one more is dropped.
const acceptBacklog = 128

// SocketBuffer is the receive buffer a UDP mapping's socket asks for:
// the kernel's default (about 208 KiB on Linux) overflows within a
// millisecond or two at a few hundred Mbit/s while the reader is not
// scheduled, and what overflows is lost before any program sees it. The
// kernel caps the request at net.core.rmem_max; the buffer costs memory
// only while datagrams wait in it.
const SocketBuffer = 4 << 20

// smallDatagram is the buffer size most datagrams fit in (an Ethernet
// MTU's worth and then some); a larger one gets a buffer of its own size.
const smallDatagram = 2 << 10

var smallBufs = sync.Pool{New: func() any {
	b := make([]byte, smallDatagram)
	return &b
}}

// UDPListener serves a UDP socket as a net.Listener of flows: Accept
// returns a Flow for each visitor address it has not seen, or has seen
// end; the socket's datagrams from that address go to that Flow, and the
// Flow's writes go to the address. It lets Serve treat a UDP port as it
// treats a TCP one: the door (Admit, online, MaxConns) admits flows.
type UDPListener struct {
	pc       *net.UDPConn
	accept   chan *Flow
	done     chan struct{} // closed by Close
	readDone chan struct{} // closed when readLoop returns

	tooLarge atomic.Int64 // datagrams over MaxDatagram, dropped
	overflow atomic.Int64 // datagrams dropped: their flow's queue, or the accept backlog, was full
	dropped  func()       // told of each of both; nil: no one
	queued   atomic.Int64 // bytes in every flow's queue

	mu     sync.Mutex // guards flows and closed
	flows  map[netip.AddrPort]*Flow
	closed bool
}

// ListenUDP serves pc's datagrams as flows; the UDPListener owns pc and
// reads it in a goroutine of its own until Close. dropped, when not nil,
// is told of each datagram dropped (TooLarge, Overflow); it must not
// block.
func ListenUDP(pc *net.UDPConn, dropped func()) *UDPListener {
	_ = pc.SetReadBuffer(SocketBuffer) // best effort: the kernel caps it
	l := &UDPListener{
		pc:       pc,
		dropped:  dropped,
		accept:   make(chan *Flow, acceptBacklog),
		done:     make(chan struct{}),
		readDone: make(chan struct{}),
		flows:    make(map[netip.AddrPort]*Flow),
	}
	go l.readLoop() // joined by Close
	return l
}

// Accept returns the next new flow; net.ErrClosed once the listener is
// closed.
func (l *UDPListener) Accept() (net.Conn, error) {
	select {
	case f := <-l.accept:
		return f, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Addr is the socket's address.
func (l *UDPListener) Addr() net.Addr { return l.pc.LocalAddr() }

// TooLarge is how many datagrams were dropped for being over MaxDatagram.
func (l *UDPListener) TooLarge() int64 { return l.tooLarge.Load() }

// Overflow is how many datagrams were dropped because their flow's queue,
// or the backlog of new flows, was full.
func (l *UDPListener) Overflow() int64 { return l.overflow.Load() }

// Close frees the port at once and ends every flow: a flow's Read returns
// io.EOF and its Write net.ErrClosed, since its datagrams can no longer
// be received or sent. It waits for the socket's reader and is safe to
// call more than once.
func (l *UDPListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.readDone
		return nil
	}
	l.closed = true
	close(l.done)
	flows := make([]*Flow, 0, len(l.flows))
	for _, f := range l.flows {
		flows = append(flows, f)
	}
	l.mu.Unlock()
	err := l.pc.Close()
	<-l.readDone
	for _, f := range flows {
		_ = f.Close()
	}
	for { // flows never accepted
		select {
		case f := <-l.accept:
			_ = f.Close()
		default:
			return err
		}
	}
}

// readLoop hands each datagram to its flow until the socket is closed.
func (l *UDPListener) readLoop() {
	defer close(l.readDone)
	buf := make([]byte, MaxDatagram+1)
	var delay time.Duration
	for {
		n, _, flags, from, err := l.pc.ReadMsgUDPAddrPort(buf, nil)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (out of memory for the kernel's
			// buffers, say): wait a little, as Accept does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		if n > MaxDatagram || flags&syscall.MSG_TRUNC != 0 {
			l.tooLarge.Add(1)
			l.drop()
			continue
		}
		l.dispatch(netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), buf[:n])
	}
}

// dispatch queues a copy of d on from's flow, starting the flow if it is
// new; a full queue or backlog drops d.
func (l *UDPListener) dispatch(from netip.AddrPort, d []byte) {
	l.mu.Lock()
	f := l.flows[from]
	if f == nil {
		if l.closed {
			l.mu.Unlock()
			return
		}
		f = newFlow(l, from)
		select {
		case l.accept <- f:
			l.flows[from] = f
		default:
			l.mu.Unlock()
			l.overflow.Add(1)
			l.drop()
			return
		}
	}
	l.mu.Unlock()
	if !f.push(d) {
		l.overflow.Add(1)
		l.drop()
	}
}

func (l *UDPListener) drop() {
	if l.dropped != nil {
		l.dropped()
	}
}

// forget removes f from the flows, if it is still the flow of its address.
func (l *UDPListener) forget(f *Flow) {
	l.mu.Lock()
	if l.flows[f.addr] == f {
		delete(l.flows, f.addr)
	}
	l.mu.Unlock()
}

// Flow is one visitor address's datagrams on a UDPListener, as a
// net.Conn: each Read returns one datagram, each Write sends one. Its
// queue is bounded (a datagram that finds it full is dropped). Deadlines
// are not supported: a relay ends a flow by closing it. One goroutine at a
// time may read.
type Flow struct {
	l     *UDPListener
	addr  netip.AddrPort
	raddr *net.UDPAddr
	q     chan *[]byte
	bytes atomic.Int64 // in q
	done  chan struct{}
	once  sync.Once
	next  *[]byte // a datagram WaitRead took off q; the reader's own
}

var errNoDeadline = errors.New("dataplane: a UDP flow has no deadlines")

func newFlow(l *UDPListener, addr netip.AddrPort) *Flow {
	return &Flow{l: l, addr: addr, raddr: net.UDPAddrFromAddrPort(addr), q: make(chan *[]byte, flowQueueLen), done: make(chan struct{})}
}

// push queues a copy of d, or reports false when the queue is full or the
// flow closed.
func (f *Flow) push(d []byte) bool {
	if f.bytes.Load()+int64(len(d)) > flowQueueBytes || f.l.queued.Load()+int64(len(d)) > listenerQueueBytes {
		return false
	}
	var bp *[]byte
	if len(d) <= smallDatagram {
		bp = smallBufs.Get().(*[]byte)
		*bp = (*bp)[:len(d)]
	} else {
		b := make([]byte, len(d))
		bp = &b
	}
	copy(*bp, d)
	select {
	case <-f.done:
	default:
		select {
		case f.q <- bp:
			f.count(len(d))
			return true
		default:
		}
	}
	release(bp)
	return false
}

// count adds n bytes to what f's queue holds, and its listener's.
func (f *Flow) count(n int) {
	f.bytes.Add(int64(n))
	f.l.queued.Add(int64(n))
}

// release gives a queued datagram's buffer back.
func release(bp *[]byte) {
	if cap(*bp) == smallDatagram {
		*bp = (*bp)[:smallDatagram]
		smallBufs.Put(bp)
	}
}

// take is the next datagram, waiting for one; nil once the flow is
// closed.
func (f *Flow) take() *[]byte {
	if bp := f.next; bp != nil {
		f.next = nil
		return bp
	}
	select {
	case bp := <-f.q:
		f.count(-len(*bp))
		return bp
	case <-f.done:
		return nil
	}
}

// WaitRead waits until a datagram is queued or the flow is closed,
// without a buffer of the reader's.
func (f *Flow) WaitRead() error {
	if f.next == nil {
		f.next = f.take()
	}
	return nil
}

// Read copies the next datagram into p: io.EOF once the flow is closed,
// io.ErrShortBuffer (with what fits) when p is smaller than the datagram.
func (f *Flow) Read(p []byte) (int, error) {
	bp := f.take()
	if bp == nil {
		return 0, io.EOF
	}
	defer release(bp)
	n := copy(p, *bp)
	if n < len(*bp) {
		return n, io.ErrShortBuffer
	}
	return n, nil
}

// TryRead copies the next datagram into p if one is queued and fits, and
// reports whether it did; it never waits. A datagram that does not fit
// stays first in line.
func (f *Flow) TryRead(p []byte) (int, bool) {
	bp := f.next
	if bp == nil {
		select {
		case bp = <-f.q:
			f.count(-len(*bp))
		default:
			return 0, false
		}
	}
	if len(*bp) > len(p) {
		f.next = bp
		return 0, false
	}
	f.next = nil
	n := copy(p, *bp)
	release(bp)
	return n, true
}

// Write sends p to the visitor as one datagram.
func (f *Flow) Write(p []byte) (int, error) {
	select {
	case <-f.done:
		return 0, net.ErrClosed
	default:
	}
	return f.l.pc.WriteToUDPAddrPort(p, f.addr)
}

// Close ends the flow: its queue is dropped, and the next datagram from
// its address starts a new flow.
func (f *Flow) Close() error {
	f.once.Do(func() {
		f.l.forget(f)
		close(f.done)
		for {
			select {
			case bp := <-f.q:
				f.count(-len(*bp))
				release(bp)
			default:
				return
			}
		}
	})
	return nil
}

// LocalAddr is the UDP socket's address.
func (f *Flow) LocalAddr() net.Addr { return f.l.pc.LocalAddr() }

// RemoteAddr is the visitor's address, an IPv4-mapped IPv6 one as IPv4.
func (f *Flow) RemoteAddr() net.Addr { return f.raddr }

// SetDeadline is not supported.
func (f *Flow) SetDeadline(time.Time) error { return errNoDeadline }

// SetReadDeadline is not supported.
func (f *Flow) SetReadDeadline(time.Time) error { return errNoDeadline }

// SetWriteDeadline is not supported.
func (f *Flow) SetWriteDeadline(time.Time) error { return errNoDeadline }
