package control

import (
	"fmt"
	"io"
	"time"
)

// MaxQueued is how many frames may wait for the control writer. A producer
// that finds it full waits (Send) or tries again later (TrySend); nothing
// is ever queued out of order.
const MaxQueued = 256

// Writer owns the writes on one control stream: one FIFO, written by
// Run in order. Besides frames it runs the step that must follow a frame on
// the wire (a data stream's FIN after its data_channel_reset), so that no
// caller ever blocks on the network while holding anything, and no two
// frames can swap.
type Writer struct {
	w    io.Writer
	done <-chan struct{} // closed when the connection is closed; the writer stops
	fail func(error)     // ends the session on a write error
	out  chan outFrame
}

type outFrame struct {
	m     Message
	after func()        // run once m is written; not run if writing failed
	done  chan struct{} // closed once written, when not nil
}

// NewWriter writes to w until done is closed. It outlives the decision
// to end a session, so that a last error frame can still go out before
// the connection is closed.
func NewWriter(w io.Writer, done <-chan struct{}, fail func(error)) *Writer {
	return &Writer{w: w, done: done, fail: fail, out: make(chan outFrame, MaxQueued)}
}

// Run writes queued frames until the session ends or a write fails.
func (c *Writer) Run() {
	for {
		select {
		case <-c.done:
			return
		case f := <-c.out:
			err := WriteFrame(c.w, f.m)
			if err == nil && f.after != nil {
				f.after()
			}
			if f.done != nil {
				close(f.done)
			}
			if err != nil {
				c.fail(fmt.Errorf("write control: %w", err))
				return
			}
		}
	}
}

// Len is how many frames wait to be written.
func (c *Writer) Len() int { return len(c.out) }

// Send queues m, waiting for room until the session ends.
func (c *Writer) Send(m Message) { c.SendThen(m, nil) }

// SendThen queues m and, to run in the writer once m is on the wire,
// after; it waits for room until the session ends.
func (c *Writer) SendThen(m Message, after func()) {
	select {
	case c.out <- outFrame{m: m, after: after}:
	case <-c.done:
	}
}

// TrySend queues m if there is room now. Callers that must never block
// (a heartbeat tick, a lock holder) use it and try again later.
func (c *Writer) TrySend(m Message) bool { return c.TrySendThen(m, nil) }

// TrySendThen is TrySend with a step to run once m is on the wire.
func (c *Writer) TrySendThen(m Message, after func()) bool {
	select {
	case c.out <- outFrame{m: m, after: after}:
		return true
	default:
		return false
	}
}

// Flush queues m and waits until it is written, the session ends, or
// timeout passes: for the last frame before a close.
func (c *Writer) Flush(m Message, timeout time.Duration) {
	f := outFrame{m: m, done: make(chan struct{})}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case c.out <- f:
	case <-c.done:
		return
	case <-t.C:
		return
	}
	select {
	case <-f.done:
	case <-c.done:
	case <-t.C:
	}
}
