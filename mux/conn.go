package mux

import (
	"encoding/binary"
	"net"
	"sync/atomic"
	"time"
)

// epoch anchors the monotonic clock readings kept in conn.
var epoch = time.Now()

// conn wraps the session's connection to remember when a byte last
// arrived and why reading stopped, and to write each yamux data frame in
// one system call.
type conn struct {
	net.Conn
	last    atomic.Int64 // nanoseconds since epoch, monotonic
	readErr atomic.Pointer[error]
	written atomic.Int64 // bytes written, for the link sizer
	writing atomic.Bool  // a write is under way: the send loop is busy

	// owned by yamux's receive loop, the only reader
	book *book
	scan frameScanner

	// owned by yamux's send loop, the only writer
	tcp  *net.TCPConn         // the same as Conn when it is plain TCP: writev
	hdr  [yamuxHeaderLen]byte // a data frame's header, waiting for its body
	held bool                 // hdr is waiting
	out  []byte               // header and body joined, when not plain TCP
}

func newConn(c net.Conn, b *book) *conn {
	w := &conn{Conn: c, book: b}
	w.tcp, _ = c.(*net.TCPConn)
	w.last.Store(int64(time.Since(epoch)))
	return w
}

// yamux frame header layout (yamux spec.md): version, type, flags (2),
// stream ID (4), length (4).
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
)

// Write implements io.Writer. yamux's send loop writes a frame as its
// 12-byte header and then, for a data frame, its body in a second call; a
// data frame's header is held back and written together with the body, in
// one writev on TCP or one record under TLS. Other frames go out at once.
func (c *conn) Write(p []byte) (int, error) {
	c.writing.Store(true)
	defer c.writing.Store(false)
	if c.held {
		return c.writeFrame(p)
	}
	if len(p) == yamuxHeaderLen && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// progress is what the write scheduler reads to tell a stalled loan from
// a queued one: the bytes written so far, and whether a write is under
// way (on a slow link one write takes long, but the link is busy).
func (c *conn) progress() (written int64, busy bool) {
	return c.written.Load(), c.writing.Load()
}

// writeFrame writes the held header and body as one.
func (c *conn) writeFrame(body []byte) (int, error) {
	hdr := c.hdr[:]
	c.held = false
	if c.tcp != nil {
		bufs := net.Buffers{hdr, body}
		n, err := bufs.WriteTo(c.tcp)
		c.written.Add(n)
		return max(int(n)-len(hdr), 0), err
	}
	c.out = append(append(c.out[:0], hdr...), body...)
	n, err := c.Conn.Write(c.out)
	c.written.Add(int64(n))
	if len(c.out) > 64<<10 {
		c.out = nil // do not keep a large buffer for an idle session
	}
	return max(n-len(hdr), 0), err
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
