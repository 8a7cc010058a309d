package control

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// drainTimeout bounds how long an aborted data stream is drained while
// the peer has not closed it: the peer was told to reset (a
// data_channel_reset frame) and normally closes at once.
const drainTimeout = 30 * time.Second

// streamConn is a data stream as the relay sees it: a net.Conn that can
// half-close and wait for data without a buffer, and whose receive buffer
// can be released while it is empty.
type streamConn interface {
	net.Conn
	CloseWrite() error
	WaitRead() error
	Shrink()
}

// shrinkEvery is how often idle streams' receive buffers are released.
const shrinkEvery = 5 * time.Second

// dataStream is one data stream of a session, registered in its
// streamTable while its relay runs, so that the peer's data_channel_reset
// can abort it.
type dataStream struct {
	streamConn
	id        uint32
	send      func(Message)      // queues a frame on the session's control stream
	cancel    context.CancelFunc // aborts the relay; set before the relay starts
	peerReset atomic.Bool        // the peer asked for the abort: do not answer it
}

// Abort implements dataplane.Aborter: tell the peer to reset its end, and
// let the relay drain the stream until the peer closes it.
func (d *dataStream) Abort() {
	if !d.peerReset.Load() {
		d.send(&DataChannelReset{Stream: d.id})
	}
	_ = d.SetReadDeadline(time.Now().Add(drainTimeout))
}

// maxTombs bounds the resets remembered for streams not yet registered.
const maxTombs = 1024

// streamTable holds a session's live data streams by yamux stream ID.
type streamTable struct {
	mu    sync.Mutex // guards all fields
	live  map[uint32]*dataStream
	tombs map[uint32]struct{} // resets that came before their stream
	order []uint32            // tombs, oldest first
}

func newStreamTable() *streamTable {
	return &streamTable{live: make(map[uint32]*dataStream), tombs: make(map[uint32]struct{})}
}

// add registers d with a cancel func for its relay under ctx; the relay
// must run with the returned context. When the peer reset the stream
// before it was registered, the context is already cancelled.
func (t *streamTable) add(ctx context.Context, d *dataStream) context.Context {
	ctx, d.cancel = context.WithCancel(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.tombs[d.id]; ok {
		delete(t.tombs, d.id)
		d.peerReset.Store(true)
		d.cancel()
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
	d.cancel()
}

// reset handles the peer's data_channel_reset for stream id.
func (t *streamTable) reset(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.live[id]; ok {
		d.peerReset.Store(true)
		d.cancel()
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
