package mux

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// epoch anchors the monotonic clock readings kept in conn.
var epoch = time.Now()

// conn wraps the session's connection to remember when a byte last
// arrived and why reading stopped, and to write yamux's frames from a
// goroutine of its own (writeLoop).
//
// yamux's send loop writes one frame at a time and waits for each write
// to return before it takes the next frame from its queue: every frame
// is a system call, and while one is under way the other streams' frames
// wait. Here the send loop's writes only join a queue, and writeLoop
// writes whatever has gathered in one call: under load many small frames
// go out together, and on an idle link a frame goes out at once. The
// queue holds at most about one bulk frame (the link's frame size, see
// linkSizer) ahead of what is being written, so that it adds no latency
// the scheduler (sched.go) has not accounted for: a write that would
// overfill it waits. A frame that ends a stream (FIN, RST) waits for
// what is queued to be written, then is written by the send loop. A large data frame is written by the send loop
// itself once nothing is queued or being written, its header and body in
// one writev (one TLS record), as yamux would: a bulk transfer gains
// nothing from the queue but a copy and two hand-offs per frame
// (measured: 8 bulk connections at half the speed when their frames went
// through it). Close writes what is queued, for up to closeFlush,
// before it closes the connection, so that a frame written just before a
// close (a refusal, an error) still leaves.
type conn struct {
	net.Conn
	last    atomic.Int64 // nanoseconds since epoch, monotonic
	readErr atomic.Pointer[error]
	written atomic.Int64 // bytes written, for the link sizer
	writing atomic.Bool  // a write is under way, or bytes wait for one

	// owned by yamux's receive loop, the only reader
	book *book
	scan frameScanner

	// owned by yamux's send loop, the only writer
	hdr  [yamuxHeaderLen]byte // a data frame's header, waiting for its body
	held bool                 // hdr is waiting
	tcp  *net.TCPConn         // the socket Conn writes to when it is plain TCP: writev
	out  []byte               // header and body joined, for a direct write when not plain TCP

	// the queue between yamux's send loop and writeLoop
	room    func() int  // how many bytes may queue ahead of a write; set before the first Write
	start   sync.Once   // starts writeLoop, at the first write (or, at Close, keeps it from starting)
	looped  atomic.Bool // writeLoop has run
	done    chan struct{}
	closed  sync.Once
	closeEr error
	mu      sync.Mutex // guards the fields below
	cond    *sync.Cond // queued changed or a write ended; with mu
	queued  []byte     // frames waiting for writeLoop
	spare   []byte     // writeLoop's last buffer, for the next turn
	werr    error      // the first write error, or net.ErrClosed after Close: no more writes
	closing bool       // Close has begun: writeLoop ends once the queue is empty
	direct  bool       // the send loop is writing a frame itself
}

// closeFlush bounds how long Close may spend writing what is queued.
const closeFlush = 250 * time.Millisecond

// The queue's buffers come from batches, shared by every session, and go
// back when the connection is idle: an idle session holds none, and a
// busy one does not allocate at each burst (measured: small requests
// through the tunnel at 20-30 % fewer per second when each burst
// allocated its buffers). One larger than maxBatch is left to the GC.
var batches = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const maxBatch = 256 << 10

func getBatch() []byte { return (*batches.Get().(*[]byte))[:0] }

func putBatch(b []byte) {
	if cap(b) > 0 && cap(b) <= maxBatch {
		b = b[:0]
		batches.Put(&b)
	}
}

// directFrame is the smallest data frame body the send loop writes itself
// when the connection is idle.
const directFrame = 8 << 10

func newConn(c net.Conn, b *book) *conn {
	w := &conn{Conn: c, book: b, room: func() int { return maxFrame }, done: make(chan struct{})}
	w.tcp = bareTCP(c)
	w.cond = sync.NewCond(&w.mu)
	w.last.Store(int64(time.Since(epoch)))
	return w
}

// yamux frame header layout (yamux spec.md): version, type, flags (2),
// stream ID (4), length (4).
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
)

// Write implements io.Writer for yamux's send loop. yamux writes a frame
// as its 12-byte header and then, for a data frame, its body in a second
// call; a data frame's header is held back and queued together with its
// body. Write returns once the bytes are queued; a write error of an
// earlier frame fails it.
func (c *conn) Write(p []byte) (int, error) {
	slow := c.room() < maxFrame
	if c.held {
		c.held = false
		if (slow || len(p) >= directFrame) && c.idle(true) {
			return c.writeDirect(c.hdr[:], p)
		}
		return c.enqueue(c.hdr[:], p)
	}
	if len(p) == yamuxHeaderLen && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	if (slow || ends(p)) && c.idle(true) {
		return c.writeDirect(nil, p)
	}
	return c.enqueue(nil, p)
}

// ends reports whether frame p ends a stream (FIN or RST). Such a frame
// is written by the send loop once everything queued before it is
// written: yamux's Close returns when the send loop has written its FIN,
// and a relay that logged its end must not leave the stream's last bytes
// and FIN in this process (a kill -9 then would cut a finished transfer;
// TestBinaryKill9AfterFinishedDownload).
func ends(p []byte) bool {
	return len(p) == yamuxHeaderLen && binary.BigEndian.Uint16(p[2:4])&(yamuxFlagFIN|yamuxFlagRST) != 0
}

// enqueue queues hdr and body, once there is room, and returns len(body).
func (c *conn) enqueue(hdr, body []byte) (int, error) {
	c.start.Do(func() { go c.writeLoop() }) // joined by Close through done
	n := len(hdr) + len(body)
	room := c.room()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.werr == nil && len(c.queued) > 0 && len(c.queued)+n > room {
		c.cond.Wait()
	}
	if c.werr != nil {
		return 0, c.werr
	}
	if c.queued == nil {
		c.queued = getBatch()
	}
	c.queued = append(append(c.queued, hdr...), body...)
	c.writing.Store(true)
	c.cond.Broadcast()
	return len(body), nil
}

// idle reports whether nothing is queued or being written, and if so
// reserves the connection for a direct write. With wait it waits for
// that, unless a write has failed: on a slow link (a frame smaller than
// maxFrame) every frame is written directly, one at a time as yamux
// would, since a frame queued behind the one being written waits as long
// as that one takes to leave, which the scheduler does not count.
func (c *conn) idle(wait bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for wait && c.werr == nil && (len(c.queued) > 0 || c.writing.Load()) {
		c.cond.Wait()
	}
	if len(c.queued) > 0 || c.writing.Load() || c.werr != nil {
		return false
	}
	c.direct = true
	c.writing.Store(true)
	return true
}

// writeDirect writes a frame (a data frame's header and body as one),
// from the send loop, and returns len(body).
func (c *conn) writeDirect(hdr, body []byte) (int, error) {
	var n int
	var err error
	switch {
	case hdr == nil:
		n, err = c.Conn.Write(body)
	case c.tcp != nil:
		bufs := net.Buffers{hdr, body}
		var n64 int64
		n64, err = bufs.WriteTo(c.tcp)
		n = int(n64)
	default:
		c.out = append(append(c.out[:0], hdr...), body...)
		n, err = c.Conn.Write(c.out)
		if cap(c.out) > 64<<10 {
			c.out = nil // do not keep a large buffer for an idle session
		}
	}
	c.written.Add(int64(n))
	c.mu.Lock()
	c.direct = false
	c.writing.Store(len(c.queued) > 0)
	if err != nil && c.werr == nil {
		c.werr = err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return max(n-len(hdr), 0), err
}

// writeLoop writes what is queued, all of it in one call, until a write
// fails or Close has begun and the queue is empty.
func (c *conn) writeLoop() {
	c.looped.Store(true)
	defer close(c.done)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.queued) == 0 && c.werr == nil && !c.closing {
			c.writing.Store(c.direct)
			putBatch(c.queued) // an idle session keeps no buffer
			putBatch(c.spare)
			c.queued, c.spare = nil, nil
			c.cond.Broadcast() // idle: a direct write may go
			c.cond.Wait()
		}
		if len(c.queued) == 0 || c.werr != nil {
			c.writing.Store(c.direct)
			if c.werr == nil {
				c.werr = net.ErrClosed
			}
			c.cond.Broadcast()
			return
		}
		buf := c.queued
		c.queued = nil // enqueue takes a batch, or the spare one below
		if c.spare != nil {
			c.queued, c.spare = c.spare[:0], nil
		}
		c.cond.Broadcast() // room for the send loop
		c.mu.Unlock()
		n, err := c.Conn.Write(buf)
		c.written.Add(int64(n))
		c.mu.Lock()
		c.spare = buf
		if err != nil && c.werr == nil {
			c.werr = err
		}
	}
}

// Close writes what is queued, for up to closeFlush, then closes the
// connection and waits for writeLoop.
func (c *conn) Close() error {
	c.closed.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.cond.Broadcast()
		c.mu.Unlock()
		started := true
		c.start.Do(func() { started = false })
		if started && c.writing.Load() {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlush))
			<-c.done
		}
		c.closeEr = c.Conn.Close()
		c.mu.Lock()
		if c.werr == nil {
			c.werr = net.ErrClosed
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		if started {
			<-c.done
		}
	})
	return c.closeEr
}

// progress is what the write scheduler reads to tell a stalled loan from
// a queued one: the bytes written so far, and whether bytes are being
// written or wait to be (on a slow link one write takes long, but the
// link is busy).
func (c *conn) progress() (written int64, busy bool) {
	return c.written.Load(), c.writing.Load()
}

// Read implements io.Reader. It records the time of any successful read,
// and shows the session's book every frame header before yamux acts on
// it; a peer that breaks a limit fails the read, and yamux ends the
// session without having buffered the offending frames.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(int64(time.Since(epoch)))
		if berr := c.book.noteRead(&c.scan, p[:n]); berr != nil {
			n, err = 0, berr
		}
	}
	if err != nil {
		c.readErr.CompareAndSwap(nil, &err)
	}
	return n, err
}

// err is the first error a read returned, or nil.
func (c *conn) err() error {
	if p := c.readErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *conn) lastRead() time.Time {
	return epoch.Add(time.Duration(c.last.Load()))
}
