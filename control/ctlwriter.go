package control

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// ctlWriter owns the writes on one control stream: frames are queued and
// run writes them in order, so that no caller (a relay aborting, a
// heartbeat tick) ever blocks on the network while holding anything.
type ctlWriter struct {
	wg   sync.WaitGroup // queue's overflow senders
	w    io.Writer
	done <-chan struct{} // closed when the connection is closed; the writer stops
	fail func(error)     // ends the session on a write error
	out  chan outFrame
}

type outFrame struct {
	m    Message
	done chan struct{} // closed once written, when not nil
}

// newCtlWriter writes to w until done is closed. It outlives the decision
// to end a session, so that a last error frame can still go out before
// the connection is closed.
func newCtlWriter(w io.Writer, done <-chan struct{}, fail func(error)) *ctlWriter {
	return &ctlWriter{w: w, done: done, fail: fail, out: make(chan outFrame, 64)}
}

// run writes queued frames until the session ends or a write fails.
func (c *ctlWriter) run() {
	for {
		select {
		case <-c.done:
			return
		case f := <-c.out:
			err := WriteFrame(c.w, f.m)
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

// send queues m, waiting for room until the session ends.
func (c *ctlWriter) send(m Message) {
	select {
	case c.out <- outFrame{m: m}:
	case <-c.done:
	}
}

// queue queues m without blocking the caller: when the queue is full, a
// goroutine waits for room. wait joins those goroutines.
func (c *ctlWriter) queue(m Message) {
	if !c.trySend(m) {
		c.wg.Go(func() { c.send(m) })
	}
}

// wait joins queue's goroutines; call it once done is closed.
func (c *ctlWriter) wait() { c.wg.Wait() }

// trySend queues m if there is room now.
func (c *ctlWriter) trySend(m Message) bool {
	select {
	case c.out <- outFrame{m: m}:
		return true
	default:
		return false
	}
}

// flush queues m and waits until it is written, the session ends, or
// timeout passes: for the last frame before a close.
func (c *ctlWriter) flush(m Message, timeout time.Duration) {
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
