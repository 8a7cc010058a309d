package mux

import (
	"net"
	"sync/atomic"
	"time"
)

// epoch anchors the monotonic clock readings kept in conn.
var epoch = time.Now()

// conn wraps the session's connection to remember when a byte last arrived
// and why reading stopped.
type conn struct {
	net.Conn
	last    atomic.Int64 // nanoseconds since epoch, monotonic
	readErr atomic.Pointer[error]
}

func newConn(c net.Conn) *conn {
	w := &conn{Conn: c}
	w.last.Store(int64(time.Since(epoch)))
	return w
}

// Read implements io.Reader and records the time of any successful read.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(int64(time.Since(epoch)))
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
