package dataplane

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a.(*net.TCPConn), r.c.(*net.TCPConn)
}

// named is a visitor seen under another address, as a load balancer's
// PROXY header names it; like transport.ProxiedConn it buffers nothing
// and says so with BareTCP.
type named struct {
	*net.TCPConn
	remote net.Addr
}

func (n *named) RemoteAddr() net.Addr  { return n.remote }
func (n *named) BareTCP() *net.TCPConn { return n.TCPConn }

func headerAddr(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// relayed sets up visitor <-> [a | Relay | b] <-> backend over real TCP and
// returns the outer ends and a channel with the relay's result.
func relayed(t *testing.T) (visitor, backend *net.TCPConn, done chan Result) {
	t.Helper()
	visitor, a := tcpPair(t)
	b, backend := tcpPair(t)
	done = make(chan Result, 1)
	go func() { done <- Relay(context.Background(), a, b) }()
	return visitor, backend, done
}

func wait(t *testing.T, done chan Result) Result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end within 10s")
		return Result{}
	}
}

func TestRelayHalfCloseBothOrders(t *testing.T) {
	for _, first := range []string{"visitor", "backend"} {
		t.Run(first+" closes first", func(t *testing.T) {
			visitor, backend, done := relayed(t)
			x, y := visitor, backend
			if first == "backend" {
				x, y = backend, visitor
			}
			req := bytes.Repeat([]byte("q"), 300<<10)
			if _, err := x.Write(req); err != nil {
				t.Fatal(err)
			}
			_ = x.CloseWrite()
			got, err := io.ReadAll(y) // to EOF: the half-close crossed
			if err != nil || !bytes.Equal(got, req) {
				t.Fatalf("far side read %d bytes, err %v; want %d then EOF", len(got), err, len(req))
			}
			resp := bytes.Repeat([]byte("r"), 200<<10)
			if _, err := y.Write(resp); err != nil {
				t.Fatalf("answer after EOF: %v", err)
			}
			_ = y.CloseWrite()
			got, err = io.ReadAll(x)
			if err != nil || !bytes.Equal(got, resp) {
				t.Fatalf("closing side read %d bytes, err %v; want %d then EOF", len(got), err, len(resp))
			}
			r := wait(t, done)
			if r.Err != nil {
				t.Errorf("Relay.Err = %v, want nil", r.Err)
			}
			in, out := int64(len(req)), int64(len(resp))
			if first == "backend" {
				in, out = out, in
			}
			if r.AToB != in || r.BToA != out {
				t.Errorf("Relay counted %d/%d bytes, want %d/%d", r.AToB, r.BToA, in, out)
			}
		})
	}
}

func TestRelayAbortResetsOtherSide(t *testing.T) {
	visitor, backend, done := relayed(t)
	if _, err := visitor.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(backend, buf); err != nil {
		t.Fatal(err)
	}
	_ = visitor.SetLinger(0)
	_ = visitor.Close() // an RST towards the relay
	_ = backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := backend.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("backend read after the visitor reset = %v, want ECONNRESET", err)
	}
	if r := wait(t, done); r.Err == nil {
		t.Error("Relay.Err = nil after a reset")
	}
}

// TestRelayWriteErrorAborts: the far side is gone while bytes still flow.
func TestRelayWriteErrorAborts(t *testing.T) {
	visitor, backend, done := relayed(t)
	_ = backend.SetLinger(0)
	_ = backend.Close()
	var err error
	for i := 0; i < 1000 && err == nil; i++ { // until the reset comes back
		_, err = visitor.Write(make([]byte, 32<<10))
	}
	r := wait(t, done)
	if r.Err == nil {
		t.Error("Relay.Err = nil after the far side vanished")
	}
}

// TestRelayWithoutCloseWrite: a conn that cannot half-close is closed at
// its source's EOF.
func TestRelayWithoutCloseWrite(t *testing.T) {
	p1, p2 := net.Pipe()
	visitor, a := tcpPair(t)
	done := make(chan Result, 1)
	go func() { done <- Relay(context.Background(), a, p1) }()
	var wg sync.WaitGroup
	var got []byte
	wg.Go(func() { got, _ = io.ReadAll(p2) })
	_, _ = visitor.Write([]byte("abc"))
	_ = visitor.CloseWrite()
	wg.Wait()
	if string(got) != "abc" {
		t.Errorf("pipe end read %q, want abc then EOF", got)
	}
	_ = p2.Close()
	wait(t, done)
}

func TestReset(t *testing.T) {
	a, b := tcpPair(t)
	Reset(a)
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after Reset = %v, want ECONNRESET", err)
	}
	p1, p2 := net.Pipe()
	Reset(p1) // not TCP: a plain close
	if _, err := p2.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("pipe read after Reset = %v, want EOF", err)
	}
}

// abortRecorder is an Aborter: like a data stream, its abort leaves it
// readable and tells the peer out of band (here: a channel).
type abortRecorder struct {
	*net.TCPConn
	aborted chan struct{}
}

func (a *abortRecorder) Abort() { close(a.aborted) }

// TestRelayCancelAbortsAndDrains: ctx ends; the TCP end is reset, the
// Aborter end is aborted its own way and drained until its peer closes, so
// the peer's writes never block.
func TestRelayCancelAbortsAndDrains(t *testing.T) {
	visitor, a := tcpPair(t)
	b, peer := tcpPair(t)
	ab := &abortRecorder{TCPConn: b, aborted: make(chan struct{})}
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan Result, 1)
	go func() { done <- Relay(ctx, a, ab) }()
	if _, err := visitor.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("peer said reset")
	cancel(cause)
	select {
	case <-ab.aborted:
	case <-time.After(5 * time.Second):
		t.Fatal("Abort not called after ctx ended")
	}
	readReset(t, visitor)
	// The peer goes on writing far more than socket buffers hold: the
	// relay must drain it, or this blocks.
	_ = peer.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for range 64 {
		if _, err := peer.Write(make([]byte, 256<<10)); err != nil {
			t.Fatalf("peer write after abort: %v (the relay stopped draining)", err)
		}
	}
	_ = peer.CloseWrite()
	r := wait(t, done)
	if !errors.Is(r.Err, cause) {
		t.Errorf("Relay.Err = %v, want the ctx cause", r.Err)
	}
}

// TestRelayResetAfterDataIsNotEOF: the data and the reset are both already
// queued when the relay starts. Waiting for readability must not swallow
// the reset (the kernel reports it to one call only), or the far side
// would see a clean end of a truncated transfer.
func TestRelayResetAfterDataIsNotEOF(t *testing.T) {
	visitor, a := tcpPair(t)
	b, backend := tcpPair(t)
	if _, err := visitor.Write(make([]byte, 100<<10+123)); err != nil {
		t.Fatal(err)
	}
	_ = visitor.SetLinger(0)
	_ = visitor.Close()
	done := make(chan Result, 1)
	go func() { done <- Relay(context.Background(), a, b) }()
	_ = backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, backend)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("backend read %d bytes then %v, want a reset", n, err)
	}
	if r := wait(t, done); r.Err == nil {
		t.Error("Relay.Err = nil after a reset")
	}
}

// TestRelayCancelRacesTheEnd: ctx ends just as both directions finish; the
// race detector must see the abort's write ordered before Relay's return
// (a data race found by the restart fault test, when a session's teardown
// closed the listener as a visitor's relay ended).
func TestRelayCancelRacesTheEnd(t *testing.T) {
	for range 50 {
		visitor, a := tcpPair(t)
		b, backend := tcpPair(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan Result, 1)
		go func() { done <- Relay(ctx, a, b) }()
		_ = visitor.CloseWrite()
		_ = backend.CloseWrite()
		go cancel()
		r := wait(t, done)
		_ = r.Err
		visitor.Close()
		backend.Close()
	}
}

// TestTrafficCountsAsBytesFlow: a shared Traffic shows the bytes of a
// transfer that is still running, in each direction, and two relays add
// into it; at the end it agrees with the Results.
func TestTrafficCountsAsBytesFlow(t *testing.T) {
	var tr Traffic
	type ends struct{ visitor, backend *net.TCPConn }
	var all []ends
	done := make(chan Result, 2)
	for range 2 {
		visitor, a := tcpPair(t)
		b, backend := tcpPair(t)
		go func() { done <- RelayWith(context.Background(), a, b, defaultPool, &tr, Limits{}) }()
		all = append(all, ends{visitor, backend})
	}
	in, out := bytes.Repeat([]byte{1}, 300<<10), bytes.Repeat([]byte{2}, 100<<10)
	for _, e := range all {
		if _, err := e.visitor.Write(in); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(e.backend, make([]byte, len(in))); err != nil {
			t.Fatal(err)
		}
		if _, err := e.backend.Write(out); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(e.visitor, make([]byte, len(out))); err != nil {
			t.Fatal(err)
		}
	}
	// Every byte has arrived, and both relays still run. A relay counts
	// a write when the write returns, which may be just after the reader
	// has the bytes: the counts reach the totals a moment later, if not
	// yet.
	deadline := time.Now().Add(5 * time.Second)
	for tr.AToB() != int64(2*len(in)) || tr.BToA() != int64(2*len(out)) {
		if time.Now().After(deadline) {
			t.Fatalf("mid-transfer AToB %d, BToA %d; want %d and %d", tr.AToB(), tr.BToA(), 2*len(in), 2*len(out))
		}
		time.Sleep(time.Millisecond)
	}
	var sum Result
	for _, e := range all {
		_ = e.visitor.CloseWrite()
		_ = e.backend.CloseWrite()
	}
	for range all {
		r := wait(t, done)
		sum.AToB += r.AToB
		sum.BToA += r.BToA
	}
	if sum.AToB != tr.AToB() || sum.BToA != tr.BToA() {
		t.Errorf("Results %d/%d, Traffic %d/%d: want the same", sum.AToB, sum.BToA, tr.AToB(), tr.BToA())
	}
}
