package control

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tunnel is a real mux session pair over loopback TCP with its control
// stream, for the data stream tests; the client's control writer runs and
// records what it writes.
type tunnel struct {
	cli, srv   *mux.Session
	cctl, sctl *mux.Stream
	w          *Writer
	table      *StreamTable // the client's
	rec        *frameRecorder
}

type frameRecorder struct {
	w    io.Writer
	mu   sync.Mutex
	msgs []Message
}

func (r *frameRecorder) Write(p []byte) (int, error) {
	if m, err := Decode(p[headerLen:]); err == nil {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	}
	return r.w.Write(p)
}

func (r *frameRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func newTunnel(t *testing.T) *tunnel {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tu := &tunnel{}
	tu.cli, _ = mux.Client(c, mux.Options{})
	tu.srv, _ = mux.Server(<-accepted, mux.Options{})
	tu.cctl, _ = tu.cli.OpenControl()
	_, _ = tu.cctl.Write([]byte("x"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if tu.sctl, err = tu.srv.AcceptControl(ctx); err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadFull(tu.sctl, make([]byte, 1))
	tu.srv.Trust()
	tu.rec = &frameRecorder{w: tu.cctl}
	tu.w = NewWriter(tu.rec, tu.cli.Done(), func(error) {})
	tu.table = NewStreamTable(tu.w)
	var wg sync.WaitGroup
	wg.Go(tu.w.Run)
	t.Cleanup(func() {
		_ = tu.cli.Close()
		_ = tu.srv.Close()
		wg.Wait()
	})
	return tu
}

// open opens a data stream from the server and returns both raw ends,
// once the client has accepted it.
func (tu *tunnel) open(t *testing.T) (sst, cst *mux.Stream) {
	t.Helper()
	sst, err := tu.srv.Open()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = sst.Write([]byte("h"))
	if cst, err = tu.cli.Accept(); err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadFull(cst, make([]byte, 1))
	return sst, cst
}

// stream opens a data stream from the server; it returns the server's end
// and the client's, wrapped and registered in the client's table.
func (tu *tunnel) stream(t *testing.T) (*mux.Stream, *DataStream, context.Context) {
	t.Helper()
	sst, cst := tu.open(t)
	ds := tu.table.Open(cst, time.Time{})
	return sst, ds, tu.table.Add(context.Background(), ds)
}

func readEOF(t *testing.T, st *mux.Stream) {
	t.Helper()
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, st); err != nil {
		t.Fatalf("peer's end: %v, want the FIN (io.EOF)", err)
	}
}

// TestAbortResetsBeforeFIN pins issue 9, defects 3 and 4: an own abort
// tells the peer with data_channel_reset and then sends the FIN at once,
// the FIN behind the reset on the wire; the peer never has to wait 30 s for
// it, and can tell the FIN for the abort it is.
func TestAbortResetsBeforeFIN(t *testing.T) {
	tu := newTunnel(t)
	sst, ds, _ := tu.stream(t)
	ds.Abort()
	_ = tu.sctl.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := ReadFrame(tu.sctl)
	if r, ok := m.(*DataChannelReset); err != nil || !ok || r.Stream != ds.id {
		t.Fatalf("peer read %v, %v; want data_channel_reset %d", m, err, ds.id)
	}
	readEOF(t, sst)
	mark, ok := sst.FinMark()
	if !ok || mark > tu.sctl.Consumed() {
		t.Errorf("FIN mark %d (%v), control bytes read %d: the FIN did not follow the reset", mark, ok, tu.sctl.Consumed())
	}
	if _, err := ds.Write([]byte("late")); err == nil {
		t.Error("a write after Abort succeeded; pending writes must fail at once")
	}
	_ = sst.Close()
	if _, err := ds.Read(make([]byte, 8)); err != errAborted {
		t.Errorf("drain after the peer's FIN = %v, want errAborted (never a clean EOF)", err)
	}
}

// TestPeerResetAnsweredWithFIN: the peer's reset cancels the relay; the
// abort that follows sends the FIN and no reset back.
func TestPeerResetAnsweredWithFIN(t *testing.T) {
	tu := newTunnel(t)
	sst, ds, ctx := tu.stream(t)
	tu.table.Reset(ds.id)
	if context.Cause(ctx) != errPeerReset {
		t.Fatalf("relay context cause = %v, want errPeerReset", context.Cause(ctx))
	}
	ds.Abort()
	readEOF(t, sst)
	if n := tu.rec.count(); n != 0 {
		t.Errorf("the abort after a peer reset wrote %d control frames, want none", n)
	}
	tu.table.Remove(ds)
}

// TestFINAfterResetIsAnAbort pins issue 9, defect 4: the peer resets, then
// closes; this side's control reader is slow. The data stream's end must
// wait for the reset and read as one (errPeerReset), never as a clean
// EOF, or a truncated upload looks complete to the local service.
func TestFINAfterResetIsAnAbort(t *testing.T) {
	tu := newTunnel(t)
	sst, ds, _ := tu.stream(t)
	if err := WriteFrame(tu.sctl, &DataChannelReset{Stream: ds.id}); err != nil {
		t.Fatal(err)
	}
	_ = sst.Close()
	got := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, ds)
		got <- err
	}()
	// The control reader is slow: it gets to the reset only now. Had the
	// end not waited for it, it would have read a clean io.EOF.
	m, err := ReadFrame(tu.cctl)
	if err != nil {
		t.Fatal(err)
	}
	tu.table.Reset(m.(*DataChannelReset).Stream)
	tu.table.HandledUpTo(tu.cctl.Consumed())
	if err := <-got; err != errPeerReset {
		t.Errorf("stream ended with %v, want errPeerReset", err)
	}
	tu.table.Remove(ds)

	// Without a reset before it, the FIN is a clean end.
	sst2, ds2, _ := tu.stream(t)
	_ = sst2.Close()
	if _, err := io.Copy(io.Discard, ds2); err != nil {
		t.Errorf("clean FIN read as %v", err)
	}
	tu.table.Remove(ds2)
}

func TestStreamTableTombs(t *testing.T) {
	tu := newTunnel(t)
	tab := tu.table
	// A reset that overtakes its stream is applied when the stream appears.
	_, cst := tu.open(t)
	tab.Reset(cst.StreamID())
	tab.Reset(cst.StreamID())
	early := tab.Open(cst, time.Time{})
	if ctx := tab.Add(context.Background(), early); ctx.Err() == nil {
		t.Error("a stream reset before it was registered started live")
	}
	tab.Remove(early)
	// Tombstones are bounded.
	for id := uint32(100); id < 100+2*maxTombs; id++ {
		tab.Reset(id)
	}
	if len(tab.tombs) != maxTombs || len(tab.order) != maxTombs {
		t.Errorf("%d tombstones (%d in order), want %d", len(tab.tombs), len(tab.order), maxTombs)
	}
	if tab.Len() != 0 {
		t.Errorf("%d live streams left", tab.Len())
	}
}

// gate passes writes through once opened; until then they block.
type gate struct {
	w    io.Writer
	open chan struct{}
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	return g.w.Write(p)
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return context.DeadlineExceeded
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// TestCtlWriterFIFO: frames queued from one goroutine while the writer is
// stuck go out in the order they were queued, and a full queue makes the
// sender wait instead of spawning anything.
func TestCtlWriterFIFO(t *testing.T) {
	tu := newTunnel(t)
	g := &gate{w: tu.rec, open: make(chan struct{})}
	w := NewWriter(g, tu.cli.Done(), func(error) {})
	var wg sync.WaitGroup
	wg.Go(w.Run)
	const n = 3 * MaxQueued
	sent := make(chan struct{})
	go func() {
		for i := range n {
			w.Send(&Ping{Time: int64(i)})
		}
		close(sent)
	}()
	if err := waitFor(5*time.Second, func() bool { return len(w.out) == MaxQueued }); err != nil {
		t.Fatal("the queue did not fill")
	}
	select {
	case <-sent:
		t.Fatal("send returned with the queue full and the writer stuck")
	default:
	}
	close(g.open)
	<-sent
	if err := waitFor(5*time.Second, func() bool { return tu.rec.count() == n }); err != nil {
		t.Fatalf("%d of %d frames written", tu.rec.count(), n)
	}
	tu.rec.mu.Lock()
	for i, m := range tu.rec.msgs {
		if m.(*Ping).Time != int64(i) {
			t.Errorf("frame %d is ping %d", i, m.(*Ping).Time)
			break
		}
	}
	tu.rec.mu.Unlock()
	_ = tu.cli.Close()
	wg.Wait()
}

// TestAckReadKeepsAbortDeadline pins an issue 9 finding: an Abort while
// the server waits for the ack sets the drain's deadline, and the ack
// arriving afterwards must not wipe it, or a drain whose peer never closes
// would last forever.
func TestAckReadKeepsAbortDeadline(t *testing.T) {
	defer func(d time.Duration) { drainTimeout = d }(drainTimeout)
	drainTimeout = 300 * time.Millisecond
	tu := newTunnel(t)
	sst, cst := tu.open(t) // the server's end is the one that reads an ack
	tab := NewStreamTable(tu.w)
	ds := tab.Open(sst, time.Now().Add(10*time.Second))
	tab.Add(context.Background(), ds)
	drained := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, ds) // waits for the ack first
		drained <- err
	}()
	// The abort must come while the ack read is under way: wait until the
	// reader is blocked in it.
	if err := waitFor(5*time.Second, func() bool { return blockedIn("(*DataStream).readAck") }); err != nil {
		t.Fatal("the reader never waited for the ack")
	}
	ds.Abort()
	if err := WriteFrame(cst, &DataChannelAck{Status: StatusOK}); err != nil { // the late ack
		t.Fatal(err)
	}
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("the drain still runs 5s after an abort with a 300ms drain timeout: the ack wiped its deadline")
	}
	tab.Remove(ds)
}

// blockedIn reports whether some goroutine's stack is in function fn.
func blockedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte(fn))
}
