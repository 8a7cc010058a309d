package dataplane

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// udpListen serves a loopback UDP socket as a UDPListener.
func udpListen(t *testing.T) *UDPListener {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l := ListenUDP(pc, nil)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// udpDial is a visitor: a UDP socket connected to addr.
func udpDial(t *testing.T, addr net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, addr.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// acceptFlow accepts the next flow within 5 s.
func acceptFlow(t *testing.T, l *UDPListener) *Flow {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			c = nil
		}
		ch <- c
	}()
	select {
	case c := <-ch:
		if c == nil {
			t.Fatal("Accept failed")
		}
		return c.(*Flow)
	case <-time.After(5 * time.Second):
		t.Fatal("no flow accepted in 5 s")
	}
	return nil
}

func readDatagram(t *testing.T, c net.Conn) []byte {
	t.Helper()
	buf := make([]byte, MaxDatagram+1)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read datagram: %v", err)
	}
	return buf[:n]
}

func TestUDPListenerFlowPerAddress(t *testing.T) {
	l := udpListen(t)
	a, b := udpDial(t, l.Addr()), udpDial(t, l.Addr())
	if _, err := a.Write([]byte("a1")); err != nil {
		t.Fatal(err)
	}
	fa := acceptFlow(t, l)
	if got := fa.RemoteAddr().String(); got != a.LocalAddr().String() {
		t.Errorf("flow's RemoteAddr %s, want the visitor's %s", got, a.LocalAddr())
	}
	if _, err := b.Write([]byte("b1")); err != nil {
		t.Fatal(err)
	}
	fb := acceptFlow(t, l)
	for _, d := range []string{"a2", "", "a3"} { // an empty datagram is one too
		if _, err := a.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	for _, want := range []string{"a1", "a2", "", "a3"} {
		n, err := fa.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("flow a read %q, %v; want %q", buf[:n], err, want)
		}
	}
	if n, err := fb.Read(buf); err != nil || string(buf[:n]) != "b1" {
		t.Fatalf("flow b read %q, %v", buf[:n], err)
	}
	if _, err := fb.Write([]byte("to b")); err != nil {
		t.Fatal(err)
	}
	if got := readDatagram(t, b); string(got) != "to b" {
		t.Errorf("b got %q", got)
	}
}

func TestFlowShortBufferAndClose(t *testing.T) {
	l := udpListen(t)
	a := udpDial(t, l.Addr())
	if _, err := a.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	f := acceptFlow(t, l)
	buf := make([]byte, 4)
	if n, err := f.Read(buf); !errors.Is(err, io.ErrShortBuffer) || n != 4 {
		t.Errorf("Read into 4 bytes = %d, %v; want 4, io.ErrShortBuffer", n, err)
	}
	if err := f.SetReadDeadline(time.Now()); err == nil {
		t.Error("SetReadDeadline succeeded on a flow")
	}
	_ = f.Close()
	if n, err := f.Read(buf); err != io.EOF || n != 0 {
		t.Errorf("Read after Close = %d, %v; want io.EOF", n, err)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
	// The address's next datagram starts a new flow.
	if _, err := a.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	f2 := acceptFlow(t, l)
	if f2 == f {
		t.Fatal("the closed flow came back")
	}
	if got := readDatagram(t, f2); string(got) != "again" {
		t.Errorf("new flow read %q", got)
	}
}

// A flow nobody reads fills its queue and drops; the other flows of the
// socket go on.
func TestFlowQueueFullDropsOnlyItsOwn(t *testing.T) {
	l := udpListen(t)
	stuck, other := udpDial(t, l.Addr()), udpDial(t, l.Addr())
	if _, err := stuck.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	stuckFlow := acceptFlow(t, l) // never read
	big := bytes.Repeat([]byte{'x'}, 1400)
	// One at a time, each waited for: the kernel's own buffer must not be
	// what drops them.
	deadline := time.Now().Add(10 * time.Second)
	for l.Overflow() == 0 {
		before := stuckFlow.bytes.Load()
		if _, err := stuck.Write(big); err != nil {
			t.Fatal(err)
		}
		for stuckFlow.bytes.Load() == before && l.Overflow() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("queue at %d bytes, nothing dropped", before)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	if q := stuckFlow.bytes.Load(); q > flowQueueBytes || q < flowQueueBytes-1400 {
		t.Errorf("the unread flow holds %d bytes when it drops, want about %d", q, flowQueueBytes)
	}
	if _, err := other.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	f := acceptFlow(t, l)
	if got := readDatagram(t, f); string(got) != "hello" {
		t.Errorf("other flow read %q", got)
	}
}

func TestUDPListenerCloseFreesPortAndEndsFlows(t *testing.T) {
	l := udpListen(t)
	addr := l.Addr().(*net.UDPAddr)
	a := udpDial(t, addr)
	if _, err := a.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	f := acceptFlow(t, l)
	_ = readDatagram(t, f)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 8)); err != io.EOF {
		t.Errorf("flow Read after the listener's Close = %v, want io.EOF", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	pc, err := net.ListenUDP("udp", addr)
	if err != nil {
		t.Fatalf("the port is still bound after Close: %v", err)
	}
	_ = pc.Close()
}

// A backlog of new flows that nobody accepts drops the datagrams that
// would start more.
func TestUDPListenerBacklogFull(t *testing.T) {
	l := udpListen(t)
	deadline := time.Now().Add(10 * time.Second)
	for range acceptBacklog + 8 {
		before := len(l.accept) + int(l.Overflow())
		c := udpDial(t, l.Addr())
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		for len(l.accept)+int(l.Overflow()) == before { // each waited for: the kernel must not drop it
			if time.Now().After(deadline) {
				t.Fatal("a new flow's datagram was neither queued nor dropped")
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	if got := l.Overflow(); got != 8 {
		t.Errorf("overflow %d after %d new flows, want 8", got, acceptBacklog+8)
	}
}

// Serve takes a UDPListener as it takes a TCP one: flows past MaxConns
// are reset at the door.
func TestServeUDPMaxConns(t *testing.T) {
	l := udpListen(t)
	release := make(chan struct{})
	served := make(chan struct{}, 4)
	srv := Serve(l, func(ctx context.Context, c net.Conn) {
		defer c.Close()
		served <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}, Options{MaxConns: 1})
	defer srv.Close()
	a, b := udpDial(t, l.Addr()), udpDial(t, l.Addr())
	if _, err := a.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	<-served
	deadline := time.Now().Add(5 * time.Second)
	for srv.Refused() == 0 {
		if _, err := b.Write([]byte("b")); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the second flow was not refused")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if srv.Active() != 1 {
		t.Errorf("Active %d, want 1", srv.Active())
	}
	close(release)
}

// framedPeer is the far end of a datagram relay's stream: it writes and
// reads frames as protocol.md 7.8 says.
type framedPeer struct{ c *net.TCPConn }

func (p framedPeer) send(t *testing.T, d []byte) {
	t.Helper()
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(d)))
	if _, err := p.c.Write(append(frame, d...)); err != nil {
		t.Fatal(err)
	}
}

func (p framedPeer) recv(t *testing.T) []byte {
	t.Helper()
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [2]byte
	if _, err := io.ReadFull(p.c, hdr[:]); err != nil {
		t.Fatalf("read frame length: %v", err)
	}
	d := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(p.c, d); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return d
}

// expectEOF waits for the relay's FIN on the stream.
func (p framedPeer) expectEOF(t *testing.T) {
	t.Helper()
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := p.c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read %d, %v; want the relay's FIN", n, err)
	}
}

// datagramRelay runs RelayDatagrams between a visitor's flow of a real
// UDP socket and a real TCP connection standing for the data stream.
func datagramRelay(t *testing.T, ctx context.Context, o DatagramOptions) (visitor *net.UDPConn, peer framedPeer, done chan Result) {
	t.Helper()
	l := udpListen(t)
	visitor = udpDial(t, l.Addr())
	if _, err := visitor.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	f := acceptFlow(t, l)
	s, p := tcpPair(t)
	done = make(chan Result, 1)
	go func() { done <- RelayDatagrams(ctx, f, s, o) }()
	peer = framedPeer{p}
	if got := peer.recv(t); string(got) != "hello" {
		t.Fatalf("first frame %q", got)
	}
	return visitor, peer, done
}

func waitResult(t *testing.T, done chan Result) Result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("relay did not end in 15 s")
	}
	return Result{}
}

func TestRelayDatagramsBothWaysIntact(t *testing.T) {
	var tr Traffic
	visitor, peer, done := datagramRelay(t, context.Background(), DatagramOptions{Traffic: &tr})
	sizes := []int{0, 1, 2, 1400, 8192, 65507}
	for _, n := range sizes {
		d := bytes.Repeat([]byte{byte(n)}, n)
		if _, err := visitor.Write(d); err != nil {
			t.Fatal(err)
		}
		if got := peer.recv(t); !bytes.Equal(got, d) {
			t.Fatalf("visitor's %d-byte datagram arrived as %d bytes", n, len(got))
		}
		peer.send(t, d)
		if got := readDatagram(t, visitor); !bytes.Equal(got, d) {
			t.Fatalf("peer's %d-byte datagram arrived as %d bytes", n, len(got))
		}
	}
	// The peer ends the flow: the relay ends it too, FIN and all.
	_ = peer.c.CloseWrite()
	peer.expectEOF(t)
	r := waitResult(t, done)
	total := int64(5)
	for _, n := range sizes {
		total += int64(n)
	}
	if r.Err != nil || r.AToB != total || r.BToA != total-5 {
		t.Errorf("result %+v, want no error and %d bytes up, %d down", r, total, total-5)
	}
	if tr.AToB() != r.AToB || tr.BToA() != r.BToA {
		t.Errorf("traffic %d/%d, result %d/%d", tr.AToB(), tr.BToA(), r.AToB, r.BToA)
	}
}

func TestRelayDatagramsIdleEndsFlow(t *testing.T) {
	_, peer, done := datagramRelay(t, context.Background(), DatagramOptions{Idle: 100 * time.Millisecond})
	peer.expectEOF(t) // the relay's FIN, after 100 ms of quiet
	_ = peer.c.CloseWrite()
	if r := waitResult(t, done); r.Err != nil {
		t.Errorf("idle end: %v, want a clean end", r.Err)
	}
}

// Traffic keeps a flow alive past its idle timeout.
func TestRelayDatagramsTrafficKeepsFlow(t *testing.T) {
	visitor, peer, done := datagramRelay(t, context.Background(), DatagramOptions{Idle: 500 * time.Millisecond})
	for i := range 10 {
		// The traffic itself, a datagram every 100 ms over twice the
		// timeout: 400 ms to spare on a machine that stalls.
		time.Sleep(100 * time.Millisecond)
		d := []byte(fmt.Sprint(i))
		if _, err := visitor.Write(d); err != nil {
			t.Fatal(err)
		}
		if got := peer.recv(t); !bytes.Equal(got, d) {
			t.Fatalf("datagram %d arrived as %q", i, got)
		}
	}
	select {
	case r := <-done:
		t.Fatalf("the flow ended while datagrams flowed: %+v", r)
	default:
	}
	peer.expectEOF(t)
	_ = peer.c.CloseWrite()
	waitResult(t, done)
}

// A peer that never answers the FIN is aborted after finWait.
func TestRelayDatagramsPeerNeverEnds(t *testing.T) {
	defer func(d time.Duration) { finWait = d }(finWait)
	finWait = 200 * time.Millisecond
	_, peer, done := datagramRelay(t, context.Background(), DatagramOptions{Idle: 50 * time.Millisecond})
	peer.expectEOF(t)
	if r := waitResult(t, done); r.Err == nil {
		t.Error("a peer that never ended its side gave a clean end")
	}
}

func TestRelayDatagramsBrokenFrameAborts(t *testing.T) {
	_, peer, done := datagramRelay(t, context.Background(), DatagramOptions{})
	if _, err := peer.c.Write([]byte{0, 100, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	_ = peer.c.CloseWrite()
	if r := waitResult(t, done); !errors.Is(r.Err, io.ErrUnexpectedEOF) {
		t.Errorf("a stream ending inside a frame gave %v, want io.ErrUnexpectedEOF", r.Err)
	}
}

func TestRelayDatagramsContextAborts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	_, peer, done := datagramRelay(t, ctx, DatagramOptions{})
	cancel()
	if r := waitResult(t, done); !errors.Is(r.Err, context.Canceled) {
		t.Errorf("cancel gave %v", r.Err)
	}
	_ = peer.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, peer.c); err == nil {
		t.Error("the aborted stream ended with a FIN, not a reset")
	}
}

// The client's side: the flow is a UDP socket connected to the local
// service. A service that is not there refuses datagrams (ICMP): they
// are dropped and counted, and the flow goes on; Prefix heads each
// datagram sent to it.
func TestRelayDatagramsConnectedSocket(t *testing.T) {
	svc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	svcAddr := svc.LocalAddr().(*net.UDPAddr)
	local, err := net.DialUDP("udp", nil, svcAddr)
	if err != nil {
		t.Fatal(err)
	}
	s, p := tcpPair(t)
	peer := framedPeer{p}
	var dropped atomic.Int64
	done := make(chan Result, 1)
	go func() {
		done <- RelayDatagrams(context.Background(), local, s, DatagramOptions{Prefix: []byte("HDR:"), Dropped: func() { dropped.Add(1) }})
	}()
	peer.send(t, []byte("query"))
	buf := make([]byte, 64)
	_ = svc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := svc.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "HDR:query" {
		t.Fatalf("service read %q, %v; want the prefix and the datagram", buf[:n], err)
	}
	if _, err := svc.WriteToUDP([]byte("answer"), from); err != nil {
		t.Fatal(err)
	}
	if got := peer.recv(t); string(got) != "answer" {
		t.Fatalf("answer arrived as %q", got)
	}
	_ = svc.Close() // the service goes away: its port now refuses
	deadline := time.Now().Add(5 * time.Second)
	for dropped.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no datagram counted as dropped towards a closed port")
		}
		peer.send(t, []byte("lost"))
		time.Sleep(5 * time.Millisecond)
	}
	// It comes back on the same port: the flow still works.
	svc, err = net.ListenUDP("udp", svcAddr)
	if err != nil {
		t.Skipf("the service's port was taken meanwhile: %v", err)
	}
	defer svc.Close()
	deadline = time.Now().Add(5 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("the flow did not survive the service's restart")
		}
		peer.send(t, []byte("back"))
		_ = svc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := svc.ReadFromUDP(buf); err == nil && string(buf[:n]) == "HDR:back" {
			break
		}
	}
	_ = peer.c.CloseWrite()
	peer.expectEOF(t)
	if r := waitResult(t, done); r.Err != nil {
		t.Errorf("result %v", r.Err)
	}
}

// Stop ends the flow cleanly, as its idle timeout would.
func TestRelayDatagramsStop(t *testing.T) {
	stop := make(chan struct{})
	_, peer, done := datagramRelay(t, context.Background(), DatagramOptions{Stop: stop})
	close(stop)
	peer.expectEOF(t)
	_ = peer.c.CloseWrite()
	if r := waitResult(t, done); r.Err != nil {
		t.Errorf("stop gave %v, want a clean end", r.Err)
	}
}

// The limiters are waited on, and a relay aborted while it waits stops
// waiting.
func TestRelayDatagramsLimits(t *testing.T) {
	slow := rate.NewLimiter(rate.Limit(2000), 2000) // 2,000 bytes a second, the burst one datagram
	ctx, cancel := context.WithCancel(context.Background())
	var tr Traffic
	visitor, peer, done := datagramRelay(t, ctx, DatagramOptions{Traffic: &tr, Limits: Limits{AToB: []*rate.Limiter{slow}}})
	// "hello" took 5 of the burst; 1,990 more go at once, the next 1,000 wait half a second.
	if _, err := visitor.Write(make([]byte, 1990)); err != nil {
		t.Fatal(err)
	}
	if got := peer.recv(t); len(got) != 1990 {
		t.Fatalf("got %d bytes", len(got))
	}
	if _, err := visitor.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for slow.Tokens() >= 0 { // the relay's wait has reserved the tokens it lacks
		if time.Now().After(deadline) {
			t.Fatal("the relay did not wait on the limiter")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if r := waitResult(t, done); !errors.Is(r.Err, context.Canceled) {
		t.Errorf("abort while waiting gave %v", r.Err)
	}
	if tr.WaitAToB() <= 0 || tr.WaitBToA() != 0 {
		t.Errorf("waited %v from the flow, %v to it; want the wait cut short counted, and none the other way", tr.WaitAToB(), tr.WaitBToA())
	}
}

// TestRelayDatagramsLimitWaitCounted: the time a limiter holds a flow's
// datagrams back is counted in Traffic, in the direction its bytes are
// counted: with Reverse (the client's view), the flow's datagrams are
// BToA. 8 datagrams of 1,500 bytes through 10,000 bytes a second with a
// burst of one datagram wait about a second in all; only a machine so
// slow that sending them took longer would see no wait.
func TestRelayDatagramsLimitWaitCounted(t *testing.T) {
	slow := rate.NewLimiter(rate.Limit(10000), 1500)
	var tr Traffic
	visitor, peer, done := datagramRelay(t, context.Background(), DatagramOptions{Traffic: &tr, Reverse: true,
		Limits: Limits{AToB: []*rate.Limiter{slow}}})
	start := time.Now()
	for range 8 {
		if _, err := visitor.Write(make([]byte, 1500)); err != nil {
			t.Fatal(err)
		}
		if got := peer.recv(t); len(got) != 1500 {
			t.Fatalf("got %d bytes, want 1500", len(got))
		}
	}
	elapsed := time.Since(start)
	if d := tr.WaitBToA(); d <= 0 || d > elapsed || tr.WaitAToB() != 0 {
		t.Errorf("waited %v (BToA) and %v (AToB) in %v; want about a second BToA, none AToB", d, tr.WaitAToB(), elapsed)
	}
	_ = peer.c.CloseWrite()
	waitResult(t, done)
}
