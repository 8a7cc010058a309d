package control

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestStreamTableReset(t *testing.T) {
	tab := newStreamTable()
	var sent []Message
	mk := func(id uint32) *dataStream {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &dataStream{streamConn: pipeConn{a}, id: id, send: func(m Message) { sent = append(sent, m) }}
	}

	live := mk(2)
	ctx := tab.add(context.Background(), live)
	tab.reset(2)
	if ctx.Err() == nil || !live.peerReset.Load() {
		t.Fatal("reset of a live stream did not cancel its relay")
	}
	live.Abort() // the relay aborts in turn: it must not reset back
	if len(sent) != 0 {
		t.Errorf("Abort after a peer reset sent %v", sent)
	}
	tab.remove(live)

	// A reset that overtakes its stream is applied when the stream appears.
	tab.reset(4)
	tab.reset(4)
	early := mk(4)
	if ctx := tab.add(context.Background(), early); ctx.Err() == nil {
		t.Error("a stream reset before it was registered started live")
	}
	tab.remove(early)

	// An own abort tells the peer.
	own := mk(6)
	tab.add(context.Background(), own)
	own.Abort()
	if len(sent) != 1 || sent[0].(*DataChannelReset).Stream != 6 {
		t.Errorf("own Abort sent %v, want data_channel_reset 6", sent)
	}
	tab.remove(own)

	// Tombstones are bounded.
	for id := uint32(100); id < 100+2*maxTombs; id++ {
		tab.reset(id)
	}
	if len(tab.tombs) != maxTombs || len(tab.order) != maxTombs {
		t.Errorf("%d tombstones (%d in order), want %d", len(tab.tombs), len(tab.order), maxTombs)
	}
	if len(tab.live) != 0 {
		t.Errorf("%d live streams left", len(tab.live))
	}
}

type pipeConn struct{ net.Conn }

func (pipeConn) CloseWrite() error { return nil }

func (pipeConn) WaitRead() error { return nil }

func (pipeConn) Shrink() {}

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
