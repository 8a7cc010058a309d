package control

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// tunnel is a real mux session pair over loopback TCP with its control
// stream, for the data stream tests; the client's control writer runs and
// records what it writes.
type tunnel struct {
	cli, srv   *mux.Session
	cctl, sctl *mux.Stream
	w          *ctlWriter
	table      *streamTable // the client's
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
	tu.w = newCtlWriter(tu.rec, tu.cli.Done(), func(error) {})
	tu.table = newStreamTable(tu.w)
	var wg sync.WaitGroup
	wg.Go(tu.w.run)
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
func (tu *tunnel) stream(t *testing.T) (*mux.Stream, *dataStream, context.Context) {
	t.Helper()
	sst, cst := tu.open(t)
	ds := tu.table.newDataStream(cst, time.Time{})
	return sst, ds, tu.table.add(context.Background(), ds)
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
	tu.table.reset(ds.id)
	if context.Cause(ctx) != errPeerReset {
		t.Fatalf("relay context cause = %v, want errPeerReset", context.Cause(ctx))
	}
	ds.Abort()
	readEOF(t, sst)
	if n := tu.rec.count(); n != 0 {
		t.Errorf("the abort after a peer reset wrote %d control frames, want none", n)
	}
	tu.table.remove(ds)
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
	tu.table.reset(m.(*DataChannelReset).Stream)
	tu.table.handledUpTo(tu.cctl.Consumed())
	if err := <-got; err != errPeerReset {
		t.Errorf("stream ended with %v, want errPeerReset", err)
	}
	tu.table.remove(ds)

	// Without a reset before it, the FIN is a clean end.
	sst2, ds2, _ := tu.stream(t)
	_ = sst2.Close()
	if _, err := io.Copy(io.Discard, ds2); err != nil {
		t.Errorf("clean FIN read as %v", err)
	}
	tu.table.remove(ds2)
}

func TestStreamTableTombs(t *testing.T) {
	tu := newTunnel(t)
	tab := tu.table
	// A reset that overtakes its stream is applied when the stream appears.
	_, cst := tu.open(t)
	tab.reset(cst.StreamID())
	tab.reset(cst.StreamID())
	early := tab.newDataStream(cst, time.Time{})
	if ctx := tab.add(context.Background(), early); ctx.Err() == nil {
		t.Error("a stream reset before it was registered started live")
	}
	tab.remove(early)
	// Tombstones are bounded.
	for id := uint32(100); id < 100+2*maxTombs; id++ {
		tab.reset(id)
	}
	if len(tab.tombs) != maxTombs || len(tab.order) != maxTombs {
		t.Errorf("%d tombstones (%d in order), want %d", len(tab.tombs), len(tab.order), maxTombs)
	}
	if tab.len() != 0 {
		t.Errorf("%d live streams left", tab.len())
	}
}

func TestEvery(t *testing.T) {
	var e every
	if n, ok := e.allow(time.Hour); !ok || n != 1 {
		t.Fatalf("first allow = %d, %v; want 1, true", n, ok)
	}
	for i := 2; i <= 4; i++ {
		if n, ok := e.allow(time.Hour); ok || n != i-1 {
			t.Errorf("allow %d within the interval = %d, %v; want %d, false", i, n, ok, i-1)
		}
	}
	e.next = time.Now().Add(-time.Second)
	if n, ok := e.allow(time.Hour); !ok || n != 4 {
		t.Errorf("allow after the interval = %d, %v; want 4 (this and 3 suppressed), true", n, ok)
	}
}

func TestSpreadAtMax(t *testing.T) {
	r := ReconnectOptions{Min: time.Second, Max: 16 * time.Second, Factor: 2, Jitter: true}
	seen := map[time.Duration]bool{}
	for range 200 {
		w := spread(r.Max, r)
		if w < r.Max/2 || w > r.Max {
			t.Fatalf("spread(Max) = %s, want within [%s, %s]", w, r.Max/2, r.Max)
		}
		seen[w] = true
	}
	if len(seen) < 100 {
		t.Errorf("spread(Max) gave %d distinct waits in 200 draws: clients would return in lock-step", len(seen))
	}
	if w := spread(3*time.Second, r); w != 3*time.Second {
		t.Errorf("spread below Max = %s, want it unchanged", w)
	}
	r.Jitter = false
	if w := spread(r.Max, r); w != r.Max {
		t.Errorf("spread without jitter = %s, want Max", w)
	}
}

func TestGuardTrustedProxyNotCappedPerAddress(t *testing.T) {
	o := &ServerOptions{MaxUnauthenticated: 100, MaxUnauthenticatedPerIP: 2, BadLoginLimit: 2, BadLoginPause: time.Minute}
	o.setDefaults()
	for _, trusted := range []bool{false, true} {
		g := newGuard(o, func(string) bool { return trusted })
		admitted := 0
		for range 5 {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			if g.admit(tcpAddrConn{a}) {
				admitted++
			}
		}
		if want := map[bool]int{false: 2, true: 5}[trusted]; admitted != want {
			t.Errorf("trusted=%v: %d of 5 admitted from one address, want %d", trusted, admitted, want)
		}
	}
	g := newGuard(o, func(string) bool { return false })
	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 1}
	for range 2 {
		g.badToken(client)
	}
	if !g.isPaused(client) || g.isPaused(&net.TCPAddr{IP: net.ParseIP("203.0.113.10")}) {
		t.Error("after bad_login_limit wrong tokens the address is not paused, or another one is")
	}
}

// tcpAddrConn gives a pipe a TCP peer address.
type tcpAddrConn struct{ net.Conn }

func (tcpAddrConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9} }

// gate passes writes through once opened; until then they block.
type gate struct {
	w    io.Writer
	open chan struct{}
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	return g.w.Write(p)
}

// TestHealthReportsKeepOrder pins issue 9, defect 7: probe verdicts that
// flap while the control stream is backed up reach the server in order,
// ending with the last one. Before the fix a full queue started one
// goroutine per frame, and offline_port and online_port could swap,
// leaving a live mapping offline.
func TestHealthReportsKeepOrder(t *testing.T) {
	for run := range 20 {
		tu := newTunnel(t)
		g := &gate{w: tu.rec, open: make(chan struct{})}
		w := newCtlWriter(g, tu.cli.Done(), func(error) {})
		var wg sync.WaitGroup
		wg.Go(w.run)
		m := &clientMapping{Mapping: Mapping{Name: "web"}}
		m.online.Store(true)
		cs := &clientSession{
			c:    &Client{opts: ClientOptions{HandshakeTimeout: time.Hour}, mappings: []*clientMapping{m}, stopping: context.Background()},
			mux:  tu.cli,
			w:    w,
			regs: map[string]*regState{"web": {up: true, port: 1234, sentOnline: true, answered: true}},
		}
		for len(w.out) < ctlQueue-7 && w.trySend(&Ping{Time: 1}) { // the writer is stuck; 7 places left
		}
		final := run%2 == 0
		for i := range 40 {
			on := i%2 == 1 // ends online
			if !final && i == 39 {
				on = false
			}
			m.online.Store(on)
			cs.healthChanged(m, on)
		}
		close(g.open)
		want := map[bool]string{true: "online_port", false: "offline_port"}[final]
		if err := waitFor(5*time.Second, func() bool {
			_ = cs.checkRegs(time.Now())
			return len(w.out) == 0 && lastReport(tu.rec) == want
		}); err != nil {
			t.Fatalf("run %d: the last report the server got is %q, want %s", run, lastReport(tu.rec), want)
		}
		_ = tu.cli.Close()
		wg.Wait()
	}
}

func lastReport(r *frameRecorder) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := ""
	for _, m := range r.msgs {
		if t := m.Type(); t == "online_port" || t == "offline_port" {
			last = t
		}
	}
	return last
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
	w := newCtlWriter(g, tu.cli.Done(), func(error) {})
	var wg sync.WaitGroup
	wg.Go(w.run)
	const n = 3 * ctlQueue
	sent := make(chan struct{})
	go func() {
		for i := range n {
			w.send(&Ping{Time: int64(i)})
		}
		close(sent)
	}()
	if err := waitFor(5*time.Second, func() bool { return len(w.out) == ctlQueue }); err != nil {
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
	tab := newStreamTable(tu.w)
	ds := tab.newDataStream(sst, time.Now().Add(10*time.Second))
	tab.add(context.Background(), ds)
	drained := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, ds) // waits for the ack first
		drained <- err
	}()
	// The abort must come while the ack read is under way: wait until the
	// reader is blocked in it.
	if err := waitFor(5*time.Second, func() bool { return blockedIn("(*dataStream).readAck") }); err != nil {
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
	tab.remove(ds)
}

// blockedIn reports whether some goroutine's stack is in function fn.
func blockedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte(fn))
}

// TestRegisteredWhileStoppingIsDrained: a mapping whose register is
// answered after Shutdown began is told offline (draining) at once, like
// those that were up already, so the server takes no visitor for it.
func TestRegisteredWhileStoppingIsDrained(t *testing.T) {
	tu := newTunnel(t)
	m := &clientMapping{Mapping: Mapping{Name: "late"}}
	m.online.Store(true)
	stopping, stop := context.WithCancel(context.Background())
	c := &Client{log: slog.New(slog.DiscardHandler), mappings: []*clientMapping{m},
		byName: map[string]*clientMapping{"late": m}, stopping: stopping, stop: stop}
	cs := &clientSession{c: c, log: c.log, mux: tu.cli, w: tu.w, streams: tu.table,
		regs: map[string]*regState{"late": {sent: true, sentOnline: true}}}
	cs.drain() // nothing is up yet
	stop()
	cs.registered(&RegisterResp{Status: StatusOK, Name: "late", RemotePort: 4242})
	if err := waitFor(5*time.Second, func() bool { return tu.rec.count() == 1 }); err != nil {
		t.Fatalf("%d frames written, want the draining offline_port", tu.rec.count())
	}
	tu.rec.mu.Lock()
	defer tu.rec.mu.Unlock()
	if o, ok := tu.rec.msgs[0].(*OfflinePort); !ok || !o.Draining || o.Port != 4242 {
		t.Errorf("wrote %#v, want offline_port 4242 draining", tu.rec.msgs[0])
	}
}
