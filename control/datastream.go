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

	"github.com/gotunnel-mux/gotunnel-mux/mux"
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

// shrinkEvery is how often idle streams' receive buffers are released.
const shrinkEvery = 5 * time.Second

// dataStream is one data stream of a session as the relay sees it, and
// the one owner of how it ends. While the relay runs it is registered in
// the session's streamTable, so that the peer's data_channel_reset can
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
type dataStream struct {
	// set in newDataStream
	st    *mux.Stream
	id    uint32
	table *streamTable
	// server side: the client's data_channel_ack comes first, before this
	// deadline; zero on the client
	ackDeadline time.Time

	cancel context.CancelCauseFunc // aborts the relay; set by streamTable.add

	ackOnce sync.Once // reads the ack; then ackErr is set for good
	ackErr  error

	// aborted: Abort ran; reads only drain and the abort path owns the
	// FIN. Set under mu, read without it on the relay's path.
	aborted atomic.Bool

	mu        sync.Mutex // guards peerReset, the setting of aborted, and the stream's deadlines
	peerReset bool       // the peer reset the stream or refused it: nothing to tell it
}

var _ net.Conn = (*dataStream)(nil)

func (t *streamTable) newDataStream(st *mux.Stream, ackDeadline time.Time) *dataStream {
	return &dataStream{st: st, id: st.StreamID(), table: t, ackDeadline: ackDeadline}
}

// Read reads the peer's bytes; on the server the first call reads the
// client's ack first and fails unless it is ok. After Abort it only
// drains, and the peer's FIN reads as errAborted, never io.EOF: a copy
// that reads on while the abort is under way must not take it for a
// clean end and half-close its TCP end before the abort resets it.
func (d *dataStream) Read(p []byte) (int, error) {
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
func (d *dataStream) WaitRead() error {
	if d.aborted.Load() {
		return nil
	}
	if err := d.ack(); err != nil {
		return err
	}
	return d.st.WaitRead()
}

func (d *dataStream) Write(p []byte) (int, error) { return d.st.Write(p) }

// CloseWrite half-closes the stream (FIN) at the end of a clean direction.
// Once the stream is aborted the abort path owns the FIN: it must follow
// the data_channel_reset on the wire, never overtake it.
func (d *dataStream) CloseWrite() error {
	if d.aborted.Load() {
		return nil
	}
	return d.st.CloseWrite()
}

// Close is the relay's last call; a yamux close is a half-close.
func (d *dataStream) Close() error { return d.CloseWrite() }

func (d *dataStream) LocalAddr() net.Addr                { return d.st.LocalAddr() }
func (d *dataStream) RemoteAddr() net.Addr               { return d.st.RemoteAddr() }
func (d *dataStream) SetDeadline(t time.Time) error      { return d.st.SetDeadline(t) }
func (d *dataStream) SetReadDeadline(t time.Time) error  { return d.st.SetReadDeadline(t) }
func (d *dataStream) SetWriteDeadline(t time.Time) error { return d.st.SetWriteDeadline(t) }

// Shrink releases the receive buffer while it is empty.
func (d *dataStream) Shrink() { d.st.Shrink() }

// atFIN decides what the peer's FIN means. The peer writes a
// data_channel_reset before it closes the stream, but the reset travels on
// the control stream, read by another goroutine: so the FIN waits until
// every control frame that arrived before it has been handled, and a reset
// among them makes the end an abort (errPeerReset), not a clean EOF.
func (d *dataStream) atFIN() error {
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
func (d *dataStream) Abort() {
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
		d.table.w.sendThen(&DataChannelReset{Stream: d.id}, d.fin)
		return
	}
	d.fin()
}

func (d *dataStream) fin() { _ = d.st.CloseWrite() }

// resetByPeer records the peer's abort and aborts the relay.
func (d *dataStream) resetByPeer() {
	d.mu.Lock()
	d.peerReset = true
	d.mu.Unlock()
	if d.cancel != nil {
		d.cancel(errPeerReset)
	}
}

// refuse answers a data stream this side will not serve with a failing
// ack, closes it and drains it until the peer's FIN: the peer may have
// written a visitor's first bytes already, and must not block on them.
func (d *dataStream) refuse(code Code, reason string, timeout time.Duration) {
	d.mu.Lock()
	d.aborted.Store(true)
	d.mu.Unlock()
	_ = d.st.SetWriteDeadline(time.Now().Add(timeout))
	_ = WriteFrame(d.st, &DataChannelAck{Status: StatusFail, Code: code, Reason: reason})
	d.fin()
	d.drain()
}

// drain reads and discards until the peer's FIN or drainTimeout.
func (d *dataStream) drain() {
	_ = d.st.SetReadDeadline(time.Now().Add(drainTimeout))
	_, _ = io.Copy(io.Discard, d.st)
}

// ack reads the client's data_channel_ack once, on the server.
func (d *dataStream) ack() error {
	if d.ackDeadline.IsZero() {
		return nil
	}
	d.ackOnce.Do(d.readAck)
	return d.ackErr
}

// readAck reads the ack under the open deadline. An Abort meanwhile owns
// the deadlines: readAck never wipes the drain's.
func (d *dataStream) readAck() {
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

// streamTable holds a session's live data streams by yamux stream ID, and
// how far the control reader has got.
type streamTable struct {
	w *ctlWriter // the session's control writer: resets and the FINs after them

	mu      sync.Mutex // guards all fields below
	live    map[uint32]*dataStream
	tombs   map[uint32]struct{} // resets that came before their stream
	order   []uint32            // tombs, oldest first
	handled int64               // control stream bytes read and handled
	moved   chan struct{}       // closed and replaced when handled grows
	stopped bool                // the control reader has stopped
}

func newStreamTable(w *ctlWriter) *streamTable {
	return &streamTable{w: w, live: make(map[uint32]*dataStream), tombs: make(map[uint32]struct{}), moved: make(chan struct{})}
}

// add registers d with a cancel func for its relay under ctx; the relay
// must run with the returned context. When the peer reset the stream
// before it was registered, the context is already cancelled.
func (t *streamTable) add(ctx context.Context, d *dataStream) context.Context {
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

func (t *streamTable) remove(d *dataStream) {
	t.mu.Lock()
	if t.live[d.id] == d {
		delete(t.live, d.id)
	}
	t.mu.Unlock()
	d.cancel(context.Canceled)
}

// reset handles the peer's data_channel_reset for stream id.
func (t *streamTable) reset(id uint32) {
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

// len is the number of live data streams.
func (t *streamTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.live)
}

// handledUpTo records that the control reader has read and handled the
// control stream's first n bytes.
func (t *streamTable) handledUpTo(n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n > t.handled && !t.stopped {
		t.handled = n
		close(t.moved)
		t.moved = make(chan struct{})
	}
}

// stopReading records that the control reader has stopped: nothing more
// will be handled.
func (t *streamTable) stopReading() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		close(t.moved)
	}
}

// waitHandled waits until the control reader has handled the control
// stream's first mark bytes, has stopped, or finWait has passed.
func (t *streamTable) waitHandled(mark int64) {
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

// shrink releases the receive buffer of every live stream whose buffer is
// empty: yamux keeps a stream's buffer at its peak size (up to the window)
// otherwise, so a burst would cost its memory for as long as the stream
// then stays idle. A busy stream allocates a fresh one on its next frame.
func (t *streamTable) shrink() {
	t.mu.Lock()
	live := make([]*dataStream, 0, len(t.live))
	for _, d := range t.live {
		live = append(live, d)
	}
	t.mu.Unlock()
	for _, d := range live {
		d.Shrink()
	}
}
