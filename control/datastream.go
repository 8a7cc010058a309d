package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// drainTimeout bounds how long an aborted data stream is drained while
// the peer has not closed it. A peer that follows protocol.md 7.5 closes
// it at once; this bounds one that does not.
var drainTimeout = 30 * time.Second // a var for tests

// finWait bounds how long a data stream's end waits for the control
// reader to handle the control frames that arrived before it (see atFIN).
const finWait = 10 * time.Second

// Why a data stream's reads fail once it is aborted.
var (
	// errPeerReset: the peer aborted the data stream.
	errPeerReset = errors.New("control: data stream reset by the peer")
	// errAborted: this side aborted it; the drain reached the peer's FIN.
	errAborted = errors.New("control: data stream aborted")
)

// ShrinkEvery is how often idle streams' receive buffers are released.
const ShrinkEvery = 5 * time.Second

// Stream is a data stream as the multiplexer hands it out (a
// *mux.Stream): a net.Conn that half-closes, can wait for data without a
// buffer, and knows where its FIN fell in the control stream.
type Stream interface {
	net.Conn
	// CloseWrite sends the FIN: this side writes no more.
	CloseWrite() error
	// WaitRead waits until something can be read, without a buffer.
	WaitRead() error
	// Shrink releases the receive buffer while it is empty.
	Shrink()
	// FinMark is how many control-stream bytes had arrived when the
	// peer's FIN did; ok is false before the FIN.
	FinMark() (mark int64, ok bool)
	// StreamID is the multiplexer's id for the stream, as
	// data_channel_reset names it.
	StreamID() uint32
}

// DataStream is one data stream of a session as the relay sees it, and
// the one owner of how it ends. While the relay runs it is registered in
// the session's StreamTable, so that the peer's data_channel_reset can
// abort it.
//
// Every way it ends goes through here (protocol.md 7.5):
//   - a clean end: each direction's FIN, by the relay (CloseWrite);
//   - this side aborts (Abort): pending writes are unblocked, the peer is
//     told with data_channel_reset, the FIN follows the reset on the wire,
//     and the stream is drained until the peer's FIN;
//   - the peer aborts (a data_channel_reset, or a refusing ack): the same
//     without telling the peer;
//   - the peer's FIN arrives after the peer's reset: the FIN is taken for
//     the abort it is, never for a clean end (atFIN).
type DataStream struct {
	// set in newDataStream
	st    Stream
	id    uint32
	table *StreamTable
	// server side: the client's data_channel_ack comes first, before this
	// deadline; zero on the client
	ackDeadline time.Time

	cancel context.CancelCauseFunc // aborts the relay; set by StreamTable.add

	ackOnce sync.Once // reads the ack; then ackErr is set for good
	ackErr  error
	onAck   func(error) // told the ack's outcome once; set before the first Read

	// aborted: Abort ran; reads only drain and the abort path owns the
	// FIN. Set under mu, read without it on the relay's path.
	aborted atomic.Bool

	mu        sync.Mutex // guards peerReset, the setting of aborted, and the stream's deadlines
	peerReset bool       // the peer reset the stream or refused it: nothing to tell it
}

var _ net.Conn = (*DataStream)(nil)

// Open wraps st, a data stream of the table's session, for its relay.
// On the server ackDeadline bounds the wait for the client's
// data_channel_ack, which the first Read reads; zero on the client.
func (t *StreamTable) Open(st Stream, ackDeadline time.Time) *DataStream {
	return &DataStream{st: st, id: st.StreamID(), table: t, ackDeadline: ackDeadline}
}

// Read reads the peer's bytes; on the server the first call reads the
// client's ack first and fails unless it is ok. After Abort it only
// drains, and the peer's FIN reads as errAborted, never io.EOF: a copy
// that reads on while the abort is under way must not take it for a
// clean end and half-close its TCP end before the abort resets it.
func (d *DataStream) Read(p []byte) (int, error) {
	if d.aborted.Load() {
		n, err := d.st.Read(p)
		if err == io.EOF {
			err = errAborted
		}
		return n, err
	}
	if err := d.ack(); err != nil {
		return 0, err
	}
	n, err := d.st.Read(p)
	if err == io.EOF {
		err = d.atFIN()
	}
	return n, err
}

// WaitRead waits for the ack, then for data, without a buffer.
func (d *DataStream) WaitRead() error {
	if d.aborted.Load() {
		return nil
	}
	if err := d.ack(); err != nil {
		return err
	}
	return d.st.WaitRead()
}

func (d *DataStream) Write(p []byte) (int, error) { return d.st.Write(p) }

// CloseWrite half-closes the stream (FIN) at the end of a clean direction.
// Once the stream is aborted the abort path owns the FIN: it must follow
// the data_channel_reset on the wire, never overtake it.
func (d *DataStream) CloseWrite() error {
	if d.aborted.Load() {
		return nil
	}
	return d.st.CloseWrite()
}

// Close is the relay's last call; a yamux close is a half-close.
func (d *DataStream) Close() error { return d.CloseWrite() }

// LocalAddr implements net.Conn.
func (d *DataStream) LocalAddr() net.Addr { return d.st.LocalAddr() }

// RemoteAddr implements net.Conn.
func (d *DataStream) RemoteAddr() net.Addr { return d.st.RemoteAddr() }

// SetDeadline implements net.Conn.
func (d *DataStream) SetDeadline(t time.Time) error { return d.st.SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (d *DataStream) SetReadDeadline(t time.Time) error { return d.st.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (d *DataStream) SetWriteDeadline(t time.Time) error { return d.st.SetWriteDeadline(t) }

// Shrink releases the receive buffer while it is empty.
func (d *DataStream) Shrink() { d.st.Shrink() }

// atFIN decides what the peer's FIN means. The peer writes a
// data_channel_reset before it closes the stream, but the reset travels on
// the control stream, read by another goroutine: so the FIN waits until
// every control frame that arrived before it has been handled, and a reset
// among them makes the end an abort (errPeerReset), not a clean EOF.
func (d *DataStream) atFIN() error {
	if mark, ok := d.st.FinMark(); ok {
		d.table.waitHandled(mark)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.peerReset {
		return errPeerReset
	}
	return io.EOF
}

// Abort implements dataplane.Aborter; the relay calls it once, when it
// aborts. Pending and later writes fail at once (the peer must not wait
// for a window that will never open), the peer is told unless it is the
// one that aborted, the FIN follows, and reads drain what still arrives
// until the peer's FIN, for at most drainTimeout.
func (d *DataStream) Abort() {
	d.mu.Lock()
	if d.aborted.Load() {
		d.mu.Unlock()
		return
	}
	d.aborted.Store(true)
	now := time.Now()
	_ = d.st.SetWriteDeadline(now)
	_ = d.st.SetReadDeadline(now.Add(drainTimeout))
	tell := !d.peerReset
	d.mu.Unlock()
	if tell {
		d.table.w.SendThen(&DataChannelReset{Stream: d.id}, d.fin)
		return
	}
	d.fin()
}

func (d *DataStream) fin() { _ = d.st.CloseWrite() }

// resetByPeer records the peer's abort and aborts the relay.
func (d *DataStream) resetByPeer() {
	d.mu.Lock()
	d.peerReset = true
	d.mu.Unlock()
	if d.cancel != nil {
		d.cancel(errPeerReset)
	}
}

// Refuse answers a data stream this side will not serve with a failing
// ack, closes it and drains it until the peer's FIN: the peer may have
// written a visitor's first bytes already, and must not block on them.
func (d *DataStream) Refuse(code Code, reason string, timeout time.Duration) {
	d.mu.Lock()
	d.aborted.Store(true)
	d.mu.Unlock()
	_ = d.st.SetWriteDeadline(time.Now().Add(timeout))
	_ = WriteFrame(d.st, &DataChannelAck{Status: StatusFail, Code: code, Reason: reason})
	d.fin()
	d.Drain()
}

// Drain reads and discards until the peer's FIN or drainTimeout.
func (d *DataStream) Drain() {
	_ = d.st.SetReadDeadline(time.Now().Add(drainTimeout))
	_, _ = io.Copy(io.Discard, d.st)
}

// OnAck has f told, once, of the client's data_channel_ack when it has
// been read: nil for an ok, the refusal (a *RejectError) or the read's
// error otherwise. Server side; call it before the stream is read.
func (d *DataStream) OnAck(f func(err error)) { d.onAck = f }

// ack reads the client's data_channel_ack once, on the server.
func (d *DataStream) ack() error {
	if d.ackDeadline.IsZero() {
		return nil
	}
	d.ackOnce.Do(func() {
		d.readAck()
		if d.onAck != nil {
			d.onAck(d.ackErr)
		}
	})
	return d.ackErr
}

// readAck reads the ack under the open deadline. An Abort meanwhile owns
// the deadlines: readAck never wipes the drain's.
func (d *DataStream) readAck() {
	d.mu.Lock()
	if !d.aborted.Load() {
		_ = d.st.SetReadDeadline(d.ackDeadline)
	}
	d.mu.Unlock()
	m, err := ReadFrame(d.st)
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.aborted.Load() {
		_ = d.st.SetReadDeadline(time.Time{})
	}
	if err != nil {
		d.ackErr = fmt.Errorf("read data_channel_ack: %w", err)
		return
	}
	switch ack, ok := m.(*DataChannelAck); {
	case !ok:
		d.ackErr = fmt.Errorf("%w: want data_channel_ack, got %s", ErrMalformed, m.Type())
	case ack.Status != StatusOK:
		// The refusal is the client's own abort: it closes the stream
		// after the ack, and needs no data_channel_reset.
		d.peerReset = true
		d.ackErr = &RejectError{Code: ack.Code, Reason: ack.Reason}
	}
}

// maxTombs bounds the resets remembered for streams not yet registered.
const maxTombs = 1024

// StreamTable holds a session's live data streams by yamux stream ID, and
// how far the control reader has got.
type StreamTable struct {
	w *Writer // the session's control writer: resets and the FINs after them

	mu      sync.Mutex // guards all fields below
	live    map[uint32]*DataStream
	tombs   map[uint32]struct{} // resets that came before their stream
	order   []uint32            // tombs, oldest first
	handled int64               // control stream bytes read and handled
	moved   chan struct{}       // closed and replaced when handled grows
	stopped bool                // the control reader has stopped
}

// NewStreamTable returns the table of a session whose control stream w
// writes.
func NewStreamTable(w *Writer) *StreamTable {
	return &StreamTable{w: w, live: make(map[uint32]*DataStream), tombs: make(map[uint32]struct{}), moved: make(chan struct{})}
}

// Add registers d with a cancel func for its relay under ctx; the relay
// must run with the returned context. When the peer reset the stream
// before it was registered, the context is already cancelled.
func (t *StreamTable) Add(ctx context.Context, d *DataStream) context.Context {
	ctx, d.cancel = context.WithCancelCause(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.tombs[d.id]; ok {
		delete(t.tombs, d.id)
		d.resetByPeer()
		return ctx
	}
	t.live[d.id] = d
	return ctx
}

// Remove unregisters d once its relay has ended.
func (t *StreamTable) Remove(d *DataStream) {
	t.mu.Lock()
	if t.live[d.id] == d {
		delete(t.live, d.id)
	}
	t.mu.Unlock()
	d.cancel(context.Canceled)
}

// Reset handles the peer's data_channel_reset for stream id.
func (t *StreamTable) Reset(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.live[id]; ok {
		d.resetByPeer()
		return
	}
	if _, ok := t.tombs[id]; ok {
		return
	}
	t.tombs[id] = struct{}{}
	t.order = append(t.order, id)
	if len(t.order) > maxTombs {
		delete(t.tombs, t.order[0])
		t.order = t.order[1:]
	}
}

// Len is the number of live data streams.
func (t *StreamTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.live)
}

// HandledUpTo records that the control reader has read and handled the
// control stream's first n bytes.
func (t *StreamTable) HandledUpTo(n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n > t.handled && !t.stopped {
		t.handled = n
		close(t.moved)
		t.moved = make(chan struct{})
	}
}

// StopReading records that the control reader has stopped: nothing more
// will be handled.
func (t *StreamTable) StopReading() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		close(t.moved)
	}
}

// waitHandled waits until the control reader has handled the control
// stream's first mark bytes, has stopped, or finWait has passed.
func (t *StreamTable) waitHandled(mark int64) {
	var timeout <-chan time.Time
	for {
		t.mu.Lock()
		done, moved := t.handled >= mark || t.stopped, t.moved
		t.mu.Unlock()
		if done {
			return
		}
		if timeout == nil {
			tm := time.NewTimer(finWait)
			defer tm.Stop()
			timeout = tm.C
		}
		select {
		case <-moved:
		case <-timeout:
			return
		}
	}
}

// Shrink releases the receive buffer of every live stream whose buffer is
// empty: yamux keeps a stream's buffer at its peak size (up to the window)
// otherwise, so a burst would cost its memory for as long as the stream
// then stays idle. A busy stream allocates a fresh one on its next frame.
func (t *StreamTable) Shrink() {
	t.mu.Lock()
	live := make([]*DataStream, 0, len(t.live))
	for _, d := range t.live {
		live = append(live, d)
	}
	t.mu.Unlock()
	for _, d := range live {
		d.Shrink()
	}
}
