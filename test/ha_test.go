package test

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
)

// A client on several servers. Two in-process servers on loopback; the
// second serves its mapping ports on 127.0.0.2, so that both can bind the
// same port number, as two machines behind round-robin DNS would.

// haServer is one of the servers a client uses, restartable on its
// address.
type haServer struct {
	t      *testing.T
	addr   string
	public string
	srv    *testServer
}

func startHAServer(t *testing.T, public string) *haServer {
	t.Helper()
	h := &haServer{t: t, public: public}
	ln := listen(t)
	h.addr = ln.Addr().String()
	h.start(ln)
	return h
}

func (h *haServer) start(ln net.Listener) {
	o := fastServer()
	o.PublicAddr = h.public
	h.srv = startServerOn(h.t, ln, o)
}

// restart starts the server again on its address.
func (h *haServer) restart() {
	h.t.Helper()
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		h.t.Fatalf("listen again on %s: %v", h.addr, err)
	}
	h.start(ln)
}

// waitServerEvent waits for the next event of kind from server (and, for
// the mapping events, of mapping), skipping others.
func (c *testClient) waitServerEvent(t *testing.T, kind client.EventKind, server, mapping string, within time.Duration) client.Event {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case e := <-c.events:
			if e.Kind == kind && e.Server == server && (mapping == "" || e.Mapping == mapping) {
				return e
			}
		case <-timeout:
			t.Fatalf("no event %d from %s for %q within %s", kind, server, mapping, within)
		}
	}
}

// freeOnBoth is a port free on 127.0.0.1 and 127.0.0.2 a moment ago.
func freeOnBoth(t *testing.T) int {
	t.Helper()
	for range 32 {
		ln := listen(t)
		port := ln.Addr().(*net.TCPAddr).Port
		other, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
		_ = ln.Close()
		if err == nil {
			_ = other.Close()
			return port
		}
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return 0
}

// TestHAAll: ha = "all" registers the mapping on both servers, on the
// same port. Eight downloads run through the second while the first dies:
// all eight arrive intact; a visitor to the dead server's port fails at
// once; the first comes back and the client is registered on it again
// within the backoff.
func TestHAAll(t *testing.T) {
	leakCheck(t)
	const size = 16 << 20
	be, want := sourceOf(t, 41, size)
	a, b := startHAServer(t, "127.0.0.1"), startHAServer(t, "127.0.0.2")
	port := freeOnBoth(t)
	opts := fastClient(a.addr, "both", client.Mapping{Name: "dl", LocalAddr: be.addr, RemotePort: port})
	opts.MoreServers = []client.Endpoint{{Addr: b.addr}}
	opts.HA = client.HAAll
	cl := startClientOpts(t, opts)
	up := map[string]bool{}
	for len(up) < 2 {
		e := cl.waitEvent(t, client.EventMappingUp, "dl")
		if e.RemotePort != port {
			t.Fatalf("dl up on %s at port %d, want %d", e.Server, e.RemotePort, port)
		}
		up[e.Server] = true
	}
	if st := cl.Status(); len(st.Servers) != 2 || st.Servers[0].Session == nil || st.Servers[1].Session == nil {
		t.Fatalf("status servers %+v, want both logged in", st.Servers)
	}

	// Eight downloads through b, each well under way, when a dies.
	viaB := net.JoinHostPort("127.0.0.2", strconv.Itoa(port))
	var wg sync.WaitGroup
	started := make(chan struct{}, 8)
	for i := range 8 {
		wg.Go(func() {
			v, err := net.DialTimeout("tcp", viaB, 5*time.Second)
			if err != nil {
				t.Errorf("download %d: %v", i, err)
				started <- struct{}{}
				return
			}
			defer v.Close()
			_ = v.SetDeadline(time.Now().Add(30 * time.Second))
			first := make([]byte, 1<<20)
			_, err = io.ReadFull(v, first)
			started <- struct{}{}
			if err != nil {
				t.Errorf("download %d: first MiB: %v", i, err)
				return
			}
			n, sum, err := drain(io.MultiReader(bytes.NewReader(first), v))
			if err != nil || n != size || sum != want {
				t.Errorf("download %d: %d bytes (err %v, sum match %v), want %d intact", i, n, err, sum == want, size)
			}
		})
	}
	for range 8 {
		<-started
	}
	a.srv.stop(t)
	cl.waitServerEvent(t, client.EventSessionDown, a.addr, "", 10*time.Second)
	start := time.Now()
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second); err == nil {
		_ = c.Close()
		t.Error("the dead server's port still took a visitor")
	} else if took := time.Since(start); took > time.Second {
		t.Errorf("a visitor to the dead server's port took %s to fail", took)
	}
	wg.Wait()

	// a comes back: the client registers there again within the backoff.
	a.restart()
	cl.waitServerEvent(t, client.EventMappingUp, a.addr, "dl", 10*time.Second)
	timedDownload(t, port, size, want)
}

// TestHAFailover: ha = "failover" keeps one session at a time. The first
// server dies: the client is on the second within reconnect.max (and a
// dial). The first comes back: the client moves back to it, and the
// session with the second drains and ends. The first dies again and the
// second is gone too: the client goes on trying both, and is back on the
// first as soon as it returns.
func TestHAFailover(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	a, b := startHAServer(t, "127.0.0.1"), startHAServer(t, "127.0.0.1")
	opts := fastClient(a.addr, "fo", client.Mapping{Name: "e", LocalAddr: be.addr})
	opts.MoreServers = []client.Endpoint{{Addr: b.addr}}
	opts.HA = client.HAFailover
	cl := startClientOpts(t, opts)
	e := cl.waitServerEvent(t, client.EventMappingUp, a.addr, "e", 10*time.Second)
	if err := echoRoundTrip(e.RemotePort, 1, 256<<10); err != nil {
		t.Fatal(err)
	}
	if b.srv.Sessions() != 0 {
		t.Fatalf("the second server has %d sessions while the first is up, want 0", b.srv.Sessions())
	}

	a.srv.stop(t)
	start := time.Now()
	e = cl.waitServerEvent(t, client.EventMappingUp, b.addr, "e", 10*time.Second)
	if took, limit := time.Since(start), opts.Reconnect.Max+opts.DialTimeout; took > limit {
		t.Errorf("on the second server %s after the first died, want within reconnect.max and a dial (%s)", took, limit)
	}
	if err := echoRoundTrip(e.RemotePort, 2, 256<<10); err != nil {
		t.Fatal(err)
	}

	a.restart()
	var down client.Event
	timeout := time.After(10 * time.Second)
	for e.Server != a.addr || down.Server == "" { // the two come in either order
		select {
		case ev := <-cl.events:
			switch {
			case ev.Kind == client.EventMappingUp && ev.Server == a.addr:
				e = ev
			case ev.Kind == client.EventSessionDown && ev.Server == b.addr:
				down = ev
			}
		case <-timeout:
			t.Fatalf("within 10 s of the first server's return: up there %v, the second's session down %v", e.Server == a.addr, down.Server != "")
		}
	}
	if down.Err == nil || !strings.Contains(down.Err.Error(), "moved back to a preferred server") {
		t.Errorf("the second server's session ended with %v, want it retired", down.Err)
	}
	if err := echoRoundTrip(e.RemotePort, 3, 256<<10); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.srv.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the second server still has the client's session 5 s after it moved back")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Both gone, then the first returns.
	a.srv.stop(t)
	b.srv.stop(t)
	cl.waitServerEvent(t, client.EventSessionDown, a.addr, "", 10*time.Second)
	a.restart()
	e = cl.waitServerEvent(t, client.EventMappingUp, a.addr, "e", 10*time.Second)
	if err := echoRoundTrip(e.RemotePort, 4, 256<<10); err != nil {
		t.Fatal(err)
	}
	st := cl.Status()
	if st.Session == nil || st.Session.Server != a.addr || st.Servers[1].Session != nil {
		t.Errorf("status: session %+v, servers %+v; want the first only", st.Session, st.Servers)
	}
}
