package test

import (
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

func TestTwoClientsAndAWrongToken(t *testing.T) {
	leakCheck(t)
	srv := startServer(t, server.Options{})
	be1, be2 := startBackend(t, echo), startBackend(t, echo)
	c1 := startClient(t, srv.addr, "one", client.Mapping{Name: "web", LocalAddr: be1.addr})
	c2 := startClient(t, srv.addr, "two", client.Mapping{Name: "web", LocalAddr: be2.addr})
	p1, p2 := c1.waitUp(t, "web")["web"], c2.waitUp(t, "web")["web"]
	if p1 == p2 {
		t.Fatalf("both clients got port %d", p1)
	}

	bad := startClientOpts(t, client.Options{ServerAddr: srv.addr, Name: "three", Token: "wrong-token-wrong-token",
		Mappings: []client.Mapping{{Name: "x", LocalAddr: be1.addr}}})
	select {
	case err := <-bad.done:
		close(bad.done)
		var re *control.RejectError
		if !errors.As(err, &re) || re.Code != control.CodeBadToken {
			t.Fatalf("Run with a wrong token = %v, want a RejectError with code 1002", err)
		}
		if n := countEvents(bad.events, client.EventSessionUp); n != 0 {
			t.Errorf("refused client saw %d sessions up", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client with a wrong token still running after 10s; it must stop without retrying")
	}
	for i, p := range []int{p1, p2} {
		if err := echoRoundTrip(p, uint64(i), 100<<10); err != nil {
			t.Error(err)
		}
	}
	if n := srv.Sessions(); n != 2 {
		t.Errorf("server has %d sessions, want 2", n)
	}
}

func countEvents(ch chan client.Event, kind client.EventKind) int {
	n := 0
	for {
		select {
		case e := <-ch:
			if e.Kind == kind {
				n++
			}
		default:
			return n
		}
	}
}

func TestPortNotAllowedLeavesOthersWorking(t *testing.T) {
	leakCheck(t)
	free := freePort(t)
	srv := startServer(t, server.Options{AllowPorts: []server.PortRange{{Lo: free, Hi: free}, {Lo: 20000, Hi: 60000}}})
	be := startBackend(t, echo)
	cl := startClient(t, srv.addr, "mixed",
		client.Mapping{Name: "denied", LocalAddr: be.addr, RemotePort: 1999},
		client.Mapping{Name: "fixed", LocalAddr: be.addr, RemotePort: free},
		client.Mapping{Name: "picked", LocalAddr: be.addr, RemotePort: 0},
	)
	e := cl.waitEvent(t, client.EventMappingFailed, "denied")
	var re *control.RejectError
	if !errors.As(e.Err, &re) || re.Code != control.CodePortNotAllowed {
		t.Fatalf("denied mapping failed with %v, want code 1003", e.Err)
	}
	ports := cl.waitUp(t, "fixed", "picked")
	if ports["fixed"] != free {
		t.Errorf("fixed mapping got port %d, want %d", ports["fixed"], free)
	}
	if p := ports["picked"]; p < 20000 || p > 60000 && p != free {
		t.Errorf("picked port %d is outside allow_ports", p)
	}
	for name, p := range ports {
		if err := echoRoundTrip(p, 1, 10<<10); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	assertRefused(t, 1999)
}

// freePort returns a port that was free a moment ago. Only for allow_ports
// tests that need a known fixed port; the test fails clearly if it is taken.
func freePort(t *testing.T) int {
	t.Helper()
	ln := listen(t)
	p := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return p
}

// assertRefused checks that nothing listens on port.
func assertRefused(t *testing.T, port int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 2*time.Second)
	if err == nil {
		c.Close()
		t.Errorf("port %d accepts connections, want refused", port)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial port %d: %v, want connection refused", port, err)
	}
}

// waitRefused polls until connecting to port is refused, for up to d. A
// SYN that races the listener's close is dropped by the kernel and would
// be retried only after a second, so each dial is short and a dial that
// times out is simply tried again.
func waitRefused(t *testing.T, port int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 50*time.Millisecond)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		if err == nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d still not refused after %s (last: %v)", port, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClientDisconnectEndsVisitorsAndFreesPorts(t *testing.T) {
	leakCheck(t)
	srv := startServer(t, server.Options{})
	be := startBackend(t, echo)
	cl := startClient(t, srv.addr, "leaver", client.Mapping{Name: "e", LocalAddr: be.addr})
	port := cl.waitUp(t, "e")["e"]
	v := dialPort(t, port)
	defer v.Close()
	if _, err := v.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(v, buf); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	_ = cl.stop(t)
	_ = v.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := v.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("visitor read after the client left = %v, want connection reset (a truncated transfer must not look complete)", err)
	}
	waitRefused(t, port, 5*time.Second)
	t.Logf("visitor reset and port freed %s after the client stopped", time.Since(start).Round(time.Millisecond))
	if err := pollFor(5*time.Second, func() bool { return srv.Sessions() == 0 }); err != nil {
		t.Errorf("server still has %d sessions", srv.Sessions())
	}
}

// TestTakeoverGetsPortsAtOnce: a client whose old session is still
// connected but silent (it crashed, or its connection went half-open) logs
// in again with the same name: it must get its ports at once, not after a
// heartbeat timeout.
func TestTakeoverGetsPortsAtOnce(t *testing.T) {
	leakCheck(t)
	srv := startServer(t, server.Options{HeartbeatTimeout: time.Hour, HeartbeatCheckInterval: time.Minute})
	be := startBackend(t, echo)
	old := dialRaw(t, srv.addr)
	port := old.login(t, "same", control.Register{Name: "p", RemotePort: 0, LocalAddr: be.addr, Online: true})[0]

	start := time.Now()
	cl := startClient(t, srv.addr, "same", client.Mapping{Name: "p", LocalAddr: be.addr, RemotePort: port})
	if p := cl.waitUp(t, "p")["p"]; p != port {
		t.Fatalf("new session got port %d, want %d", p, port)
	}
	t.Logf("takeover took %s", time.Since(start).Round(time.Millisecond))
	if err := echoRoundTrip(port, 3, 50<<10); err != nil {
		t.Error(err)
	}
	select {
	case <-old.sess.Done():
	case <-time.After(5 * time.Second):
		t.Error("the replaced session is still open after 5s")
	}
	if n := srv.Sessions(); n != 1 {
		t.Errorf("server has %d sessions, want 1", n)
	}
}

// pollFor polls cond every 10ms until it holds or d passes.
func pollFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// waitFreed polls until port can be bound on 127.0.0.1 again, for up to
// d, and returns how long that took. Binding, unlike dialing, does not
// create visitors that the server must then tear down.
func waitFreed(t *testing.T, port int, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("port %d still bound after %s: %v", port, d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
