package dataplane

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func serveEcho(t *testing.T, opts Options) (*Listener, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	l := Serve(ln, func(_ context.Context, c net.Conn) {
		served.Add(1)
		defer c.Close()
		_, _ = io.Copy(c, c)
	}, opts)
	t.Cleanup(func() { _ = l.Close() })
	return l, &served
}

func dial(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes and reads back one byte.
func roundTrip(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{7}); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, 1))
	return err
}

// expectReset dials l and checks that the listener resets the connection
// without serving it. On loopback the reset can beat the dialer's own check
// of the connect result, so a dial that fails with a reset counts too.
func expectReset(t *testing.T, l *Listener) {
	t.Helper()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("visitor got %v, want connection reset", err)
	}
}

func TestListenerMaxConns(t *testing.T) {
	l, _ := serveEcho(t, Options{MaxConns: 2})
	c1, c2 := dial(t, l), dial(t, l)
	for _, c := range []net.Conn{c1, c2} {
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
	}
	expectReset(t, l)
	if l.Refused() != 1 || l.Active() != 2 {
		t.Errorf("Refused, Active = %d, %d; want 1, 2", l.Refused(), l.Active())
	}
	c1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for l.Active() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := roundTrip(dial(t, l)); err != nil {
		t.Errorf("a visitor after one left: %v", err)
	}
}

func TestListenerOffline(t *testing.T) {
	l, served := serveEcho(t, Options{})
	l.SetOnline(false)
	if l.Online() {
		t.Fatal("Online() after SetOnline(false)")
	}
	expectReset(t, l)
	if served.Load() != 0 || l.Dropped() != 1 {
		t.Errorf("served %d, dropped %d; want 0, 1", served.Load(), l.Dropped())
	}
	l.SetOnline(true)
	if err := roundTrip(dial(t, l)); err != nil {
		t.Errorf("online again: %v", err)
	}
}

func TestListenerCloseResetsVisitorsAndFreesPort(t *testing.T) {
	l, _ := serveEcho(t, Options{})
	c := dial(t, l)
	if err := roundTrip(c); err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	readReset(t, c)
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("port still accepts after Close")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// readReset checks that a live connection was reset.
func readReset(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read = %v, want connection reset", err)
	}
}

// TestListenerAdmit: a visitor Admit refuses is reset before the handler
// runs; one it lets in is served; the address Admit sees is the visitor's.
func TestListenerAdmit(t *testing.T) {
	var let atomic.Bool
	var seen atomic.Value
	l, served := serveEcho(t, Options{Admit: func(a net.Addr) bool {
		seen.Store(a.String())
		return let.Load()
	}})
	expectReset(t, l)
	if served.Load() != 0 || l.Denied() != 1 || l.Refused() != 0 || l.Dropped() != 0 {
		t.Errorf("served %d, denied %d, refused %d, dropped %d; want 0, 1, 0, 0", served.Load(), l.Denied(), l.Refused(), l.Dropped())
	}
	let.Store(true)
	c := dial(t, l)
	if err := roundTrip(c); err != nil {
		t.Errorf("an admitted visitor: %v", err)
	}
	if got := seen.Load(); got != c.LocalAddr().String() {
		t.Errorf("Admit saw %v, want the visitor's address %s", got, c.LocalAddr())
	}
	if l.Denied() != 1 {
		t.Errorf("Denied = %d after an admitted visitor, want 1", l.Denied())
	}
}

// TestListenerHeader: with Header, the handler gets the connection Header
// returned and Admit is asked about its address; a Header that fails
// resets the visitor, counted in BadHeaders, before Admit and the handler;
// a connection whose header is being read holds its MaxConns place.
func TestListenerHeader(t *testing.T) {
	from := headerAddr("203.0.113.9:4711")
	var seen atomic.Value
	var handled atomic.Value
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Serve(ln, func(_ context.Context, c net.Conn) {
		handled.Store(c.RemoteAddr().String())
		defer c.Close()
		_, _ = io.Copy(c, c)
	}, Options{
		MaxConns: 1,
		Admit:    func(a net.Addr) bool { seen.Store(a.String()); return a.String() == from.String() },
		Header: func(c net.Conn) (net.Conn, error) {
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil {
				return nil, err
			}
			switch b[0] {
			case 'h': // a good header naming from
				return &named{TCPConn: c.(*net.TCPConn), remote: from}, nil
			case 'w': // a header that takes its time
				<-release
				return nil, errors.New("stalled")
			case 'd': // a good header naming someone Admit refuses
				return &named{TCPConn: c.(*net.TCPConn), remote: headerAddr("192.0.2.1:1")}, nil
			}
			return nil, errors.New("bad header")
		},
	})
	t.Cleanup(func() { _ = l.Close() })

	c := dial(t, l)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hx")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("a visitor with a good header: %v", err)
	}
	if seen.Load() != from.String() || handled.Load() != from.String() {
		t.Errorf("Admit saw %v, the handler %v; want the header's %s for both", seen.Load(), handled.Load(), from)
	}
	c.Close()
	waitActive(t, l, 0)

	for _, first := range []string{"x", "d"} {
		v := dial(t, l)
		_, _ = v.Write([]byte(first))
		readReset(t, v)
		waitActive(t, l, 0) // the reset comes before the place is freed
	}
	if l.BadHeaders() != 1 || l.Denied() != 1 {
		t.Errorf("BadHeaders %d, Denied %d; want 1, 1", l.BadHeaders(), l.Denied())
	}

	// One connection waits in its Header: it holds the only place.
	w := dial(t, l)
	_, _ = w.Write([]byte("w"))
	waitActive(t, l, 1)
	expectReset(t, l)
	if l.Refused() != 1 {
		t.Errorf("Refused = %d while a header was read, want 1", l.Refused())
	}
	close(release)
	readReset(t, w)
}

func waitActive(t *testing.T, l *Listener, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.Active() != n {
		if time.Now().After(deadline) {
			t.Fatalf("Active = %d after 5s, want %d", l.Active(), n)
		}
		time.Sleep(time.Millisecond) // polling a count with a deadline
	}
}

// TestListenerCloseDuringHeader: Close resets a connection whose header is
// being read, without counting it as a bad header.
func TestListenerCloseDuringHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Serve(ln, func(_ context.Context, c net.Conn) { c.Close() }, Options{
		Header: func(c net.Conn) (net.Conn, error) {
			_, err := io.ReadFull(c, make([]byte, 1))
			return c, err
		},
	})
	c := dial(t, l)
	waitActive(t, l, 1)
	_ = l.Close()
	readReset(t, c)
	if l.BadHeaders() != 0 {
		t.Errorf("BadHeaders = %d after Close, want 0", l.BadHeaders())
	}
}

// TestListenerOfflineDuringHeader: a mapping that goes offline while a
// visitor's header is read resets that visitor once the header is in,
// counted in Dropped, without running the handler.
func TestListenerOfflineDuringHeader(t *testing.T) {
	release := make(chan struct{})
	var handled atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Serve(ln, func(_ context.Context, c net.Conn) { handled.Add(1); c.Close() }, Options{
		Header: func(c net.Conn) (net.Conn, error) {
			<-release
			return c, nil
		},
	})
	t.Cleanup(func() { _ = l.Close() })
	c := dial(t, l)
	waitActive(t, l, 1)
	l.SetOnline(false)
	close(release)
	readReset(t, c)
	if handled.Load() != 0 || l.Dropped() != 1 {
		t.Errorf("handled %d, dropped %d; want 0, 1", handled.Load(), l.Dropped())
	}
}
