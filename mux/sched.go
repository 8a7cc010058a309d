package mux

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// The write scheduler sits in front of yamux's send path. yamux queues
// every stream's frames in one FIFO ahead of the connection, and each
// stream that writes keeps a frame in it: with N bulk streams a keystroke
// waits behind N frames, plus the kernel's unsent bytes. On a slow link
// the scheduler lets one bulk frame into yamux at a time (see slots), the
// streams taking turns (a FIFO of waiting writers: round robin by frame),
// while
// the control stream and a stream that has been quiet (a keystroke, a
// small request, a new stream's header) write at once, behind at most
// those few frames. Frame size and the kernel's unsent budget follow the
// connection's sending rate (see linkSizes), so that on a slow uplink a
// small frame waits a few milliseconds, and on a fast one nothing changes.
//
// Rules (docs/performance.md, "Interactive under load"):
//   - a write of a stream that wrote at most quietBytes in the last
//     quietWindow (counting this write) goes straight to yamux;
//   - any other write is cut into frames of the current frame size, and
//     each frame waits for a slot (slots says how many there are); a slot
//     is handed to the longest waiter when a frame has been written;
//   - the control stream never waits.
const (
	bulkSlots   = 2
	quietBytes  = 8 << 10
	quietWindow = 20 * time.Millisecond
)

// scheduler is one session's write scheduler.
type scheduler struct {
	link     *linkSizer           // frame size and unsent budget; nil: fixed sizes
	progress func() (int64, bool) // the connection's bytes written, and a write under way

	mu      sync.Mutex // guards busy and waiters
	busy    int        // slots taken
	waiters []*slotWait
}

// slotWait is one writer waiting for a slot.
type slotWait struct {
	granted chan struct{} // closed when the slot is this writer's
	gone    bool          // the writer gave up; guarded by scheduler.mu
}

// frameSize is the largest bulk frame now; a bulk writer asks before
// each frame, which lets the link sizer sample.
func (sc *scheduler) frameSize() int {
	if sc.link == nil {
		return maxFrame
	}
	sc.link.sample()
	return sc.link.frameSize()
}

// queueRoom is how many bytes the connection's write queue may hold
// ahead of the write under way (conn): one bulk frame. It does not
// sample.
func (sc *scheduler) queueRoom() int {
	if sc.link == nil {
		return maxFrame
	}
	return sc.link.frameSize()
}

// acquire takes a bulk slot for st, waiting in turn. It fails when st's
// write deadline passes (yamux.ErrTimeout, as a blocked yamux write does)
// or the session closes (yamux.ErrSessionShutdown).
func (sc *scheduler) acquire(st *Stream) error {
	sc.mu.Lock()
	if sc.busy < sc.slots() && len(sc.waiters) == 0 {
		sc.busy++
		sc.mu.Unlock()
		return nil
	}
	w := &slotWait{granted: make(chan struct{})}
	sc.waiters = append(sc.waiters, w)
	sc.mu.Unlock()
	poke := st.pokeChan() // made before the deadline is read: a change after it pokes
	for {
		var timeout <-chan time.Time
		var t *time.Timer
		if d := st.wdl.get(); !d.IsZero() {
			t = time.NewTimer(time.Until(d))
			timeout = t.C
		}
		var err error
		poked := false
		select {
		case <-w.granted:
		case <-poke: // the deadline changed: look again
			poked = true
		case <-timeout:
			err = sc.giveUp(w, yamux.ErrTimeout)
		case <-st.sess.ys.CloseChan():
			err = sc.giveUp(w, yamux.ErrSessionShutdown)
		}
		if t != nil {
			t.Stop()
		}
		if !poked {
			return err
		}
	}
}

// lend marks a granted slot as lent to one yamux write. yamux may hold
// the write back while the stream's flow-control window is empty, which
// the scheduler cannot see. So every stallCheck the loan looks at the
// connection: while a write is under way or bytes went out, the write is
// queued behind frames that are going out and keeps its slot; when the
// connection sat idle, the writes holding slots are stalled, and this one
// gives its slot back early, so that stalled streams cannot stop the
// others. done ends the loan and frees the slot if that has not happened
// yet.
func (sc *scheduler) lend() (done func()) {
	var once sync.Once
	free := func() { once.Do(sc.release) }
	if sc.progress == nil {
		return free
	}
	mark, _ := sc.progress()
	var t *time.Timer
	var mu sync.Mutex // guards t and mark: the check against done's Stop
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(stallCheck, func() {
		mu.Lock()
		defer mu.Unlock()
		if now, busy := sc.progress(); busy || now-mark >= stallBytes {
			mark = now
			t.Reset(stallCheck)
			return
		}
		free()
	})
	return func() {
		mu.Lock()
		t.Stop()
		mu.Unlock()
		free()
	}
}

// A bulk write whose connection had no write under way at a check, and
// moved less than stallBytes (a few small frames, not data) since the
// last, is taken for stalled (see lend).
const (
	stallCheck = 50 * time.Millisecond
	stallBytes = 1 << 10
)

// giveUp takes w out of the queue, or, when the slot was granted
// meanwhile, hands it on.
func (sc *scheduler) giveUp(w *slotWait, err error) error {
	sc.mu.Lock()
	select {
	case <-w.granted:
		sc.mu.Unlock()
		sc.release()
	default:
		w.gone = true
		sc.mu.Unlock()
	}
	return err
}

// slots is how many bulk frames may be in yamux at once. Where the link
// is measured (TCP) and fast, every writer goes in as without a scheduler:
// yamux's queue drains in microseconds, and a hand-over per frame would
// only cost (measured on loopback: 8 connections lost a tenth). On a slow
// one, where a frame takes milliseconds to drain and a hand-over
// microseconds, one: a small frame waits behind one bulk frame at most.
// Where the link is not measured (WebSocket), bulkSlots.
func (sc *scheduler) slots() int {
	switch {
	case sc.link == nil:
		return bulkSlots
	case sc.link.frameSize() < maxFrame:
		return 1
	}
	return math.MaxInt32
}

// unlimited reports whether bulk writes need no slot now (a fast measured
// link): they go to yamux without the scheduler's bookkeeping.
func (sc *scheduler) unlimited() bool { return sc.slots() == math.MaxInt32 }

// release frees a slot: the longest waiter still waiting gets it, unless
// the slots shrank meanwhile.
func (sc *scheduler) release() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.busy > sc.slots() {
		sc.busy--
		return
	}
	for len(sc.waiters) > 0 {
		w := sc.waiters[0]
		sc.waiters[0] = nil
		sc.waiters = sc.waiters[1:]
		if !w.gone {
			close(w.granted)
			return
		}
	}
	sc.busy--
}

// maxFrame is the bulk frame size on a fast link, and the most a frame
// carries: the relays' copy buffer.
const maxFrame = 32 << 10

// quiet tracks how much a stream wrote lately, for the quiet rule. It is
// a heuristic read and written without a lock: two writers of one stream
// at once may miscount a little.
type quiet struct {
	since atomic.Int64 // monotonic nanoseconds (since epoch) the current window began
	bytes atomic.Int64 // written in it
}

// allow reports whether n more bytes keep the stream quiet, and counts
// them when they do.
func (q *quiet) allow(n int) bool {
	now := int64(time.Since(epoch))
	if now-q.since.Load() > int64(quietWindow) {
		q.since.Store(now)
		q.bytes.Store(0)
	}
	if q.bytes.Load()+int64(n) > quietBytes {
		return false
	}
	q.bytes.Add(int64(n))
	return true
}

// add counts n bytes written as bulk.
func (q *quiet) add(n int) { q.bytes.Add(int64(n)) }

// deadline is a stream's write deadline as the scheduler sees it.
type deadline struct {
	at atomic.Int64 // UnixNano; 0: none
}

func (d *deadline) set(t time.Time) {
	if t.IsZero() {
		d.at.Store(0)
		return
	}
	d.at.Store(t.UnixNano())
}

func (d *deadline) get() time.Time {
	if n := d.at.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}
