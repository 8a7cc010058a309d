package mux

import (
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Stream is one yamux stream. Close is a half-close (it sends FIN and
// forbids further writes; reads go on until the peer closes), so CloseWrite
// is the same call; yamux cannot send a reset.
type Stream struct {
	*yamux.Stream
	sess    *Session
	end     *streamEnd // what the session read of this stream's end
	control bool       // the control stream: Consumed counts its bytes; it never waits to write

	consumed atomic.Int64 // bytes read, for the control stream

	// for the write scheduler (sched.go)
	quiet quiet                         // bytes written lately
	wdl   deadline                      // the write deadline
	poke  atomic.Pointer[chan struct{}] // a deadline changed; made by the first writer that waits
}

var _ net.Conn = (*Stream)(nil)

// Read reads from the stream. At the peer's close (its FIN) it returns
// io.EOF, after every byte the peer sent. A stream that ends without the
// peer's FIN, because the session died, returns ErrSessionClosed instead:
// what it delivered is truncated. The rule is per stream: a stream whose
// FIN arrived before the session died still ends with io.EOF.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if s.control {
		s.consumed.Add(int64(n))
	}
	if err == io.EOF && !s.end.fin.Load() {
		return n, ErrSessionClosed
	}
	return n, err
}

// Write writes p to the stream through the session's write scheduler: at
// once for the control stream and a quiet stream, in turn with the other
// bulk writers otherwise (sched.go).
func (s *Stream) Write(p []byte) (int, error) {
	if s.control || s.quiet.allow(len(p)) {
		return s.Stream.Write(p)
	}
	sc := s.sess.sched
	total := 0
	for total < len(p) {
		n := min(len(p)-total, sc.frameSize())
		done := func() {}
		if !sc.unlimited() { // a fast link has nothing to take turns for
			if err := sc.acquire(s); err != nil {
				return total, err
			}
			done = sc.lend()
		}
		m, err := s.Stream.Write(p[total : total+n])
		done()
		s.quiet.add(m)
		total += m
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// SetWriteDeadline implements net.Conn; a write waiting for its turn
// fails at the deadline too.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.wdl.set(t)
	s.nudge()
	return s.Stream.SetWriteDeadline(t)
}

// SetDeadline implements net.Conn.
func (s *Stream) SetDeadline(t time.Time) error {
	s.wdl.set(t)
	s.nudge()
	return s.Stream.SetDeadline(t)
}

// nudge wakes a write waiting for its turn, to look at its deadline again.
func (s *Stream) nudge() {
	if ch := s.poke.Load(); ch != nil {
		select {
		case *ch <- struct{}{}:
		default:
		}
	}
}

// pokeChan is the channel nudge pokes, made on first use: most streams
// never wait for a turn.
func (s *Stream) pokeChan() chan struct{} {
	if ch := s.poke.Load(); ch != nil {
		return *ch
	}
	ch := make(chan struct{}, 1)
	if s.poke.CompareAndSwap(nil, &ch) {
		return ch
	}
	return *s.poke.Load()
}

// Close sends FIN; see CloseWrite.
func (s *Stream) Close() error {
	s.sess.book.closedHere(s.StreamID())
	return s.Stream.Close()
}

// CloseWrite sends FIN: the peer reads io.EOF after the data already sent.
func (s *Stream) CloseWrite() error { return s.Close() }

// Session is the session the stream belongs to.
func (s *Stream) Session() *Session { return s.sess }

// FinMark reports whether the peer's FIN on this stream has arrived and,
// if so, how many bytes of the control stream had arrived before it. A
// control frame the peer wrote before it closed this stream ends within
// the first mark bytes of the control stream: a reader that has handled
// that many control bytes has seen every such frame.
func (s *Stream) FinMark() (mark int64, ok bool) {
	if !s.end.fin.Load() {
		return 0, false
	}
	return s.end.finMark.Load(), true
}

// Consumed is how many bytes have been read from the control stream; 0
// for a data stream.
func (s *Stream) Consumed() int64 { return s.consumed.Load() }

// WaitRead waits until the stream has data to read, or has ended, without
// taking any buffer: a relay waits here while the stream is idle. The
// stream's end is left for the next Read to report; WaitRead returns nil.
func (s *Stream) WaitRead() error {
	_, _ = s.Stream.Read(nil)
	return nil
}
