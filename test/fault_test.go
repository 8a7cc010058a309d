package test

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
)

// fastServer has short intervals so that fault tests end quickly.
func fastServer() server.Options {
	return server.Options{
		HeartbeatTimeout:       time.Second,
		HeartbeatCheckInterval: 100 * time.Millisecond,
		LoginTimeout:           2 * time.Second,
		StreamOpenTimeout:      2 * time.Second,
	}
}

// overTransports runs a test once per transport that needs no TLS: the
// same faults must be survived over plain TCP and over WebSocket.
func overTransports(t *testing.T, body func(t *testing.T, transport string)) {
	for _, tr := range []string{transport.TCP, transport.WS} {
		t.Run(tr, func(t *testing.T) { body(t, tr) })
	}
}

// over sets the client's transport.
func over(transport string, o client.Options) client.Options {
	o.Transport = transport
	return o
}

// fastClient has short heartbeat, handshake, backoff and probe intervals.
func fastClient(addr, name string, maps ...client.Mapping) client.Options {
	return client.Options{
		ServerAddr:        addr,
		Name:              name,
		Mappings:          maps,
		HeartbeatInterval: 100 * time.Millisecond,
		HeartbeatTimeout:  time.Second,
		HandshakeTimeout:  time.Second,
		DialTimeout:       time.Second,
		Reconnect:         client.ReconnectOptions{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond, Factor: 2},
		Health:            client.HealthOptions{Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond, Failures: 2},
	}
}

// TestServerRestartClientComesBack: the server dies (closed abruptly) and a
// new one starts on the same address, five times; each time the client
// comes back by itself and the mapping works again.
func TestServerRestartClientComesBack(t *testing.T) {
	overTransports(t, testServerRestartClientComesBack)
}

func testServerRestartClientComesBack(t *testing.T, tr string) {
	leakCheck(t)
	be := startBackend(t, echo)
	ln := listen(t)
	addr := ln.Addr().String()
	srv := startServerOn(t, ln, fastServer())
	cl := startClientOpts(t, over(tr, fastClient(addr, "phoenix", client.Mapping{Name: "e", LocalAddr: be.addr})))
	for round := range 5 {
		port := cl.waitUp(t, "e")["e"]
		if err := echoRoundTrip(port, uint64(round), 256<<10); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		srv.stop(t)
		cl.waitEvent(t, client.EventSessionDown, "")
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("round %d: listen again on %s: %v", round, addr, err)
		}
		srv = startServerOn(t, ln, fastServer())
	}
	if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 99, 256<<10); err != nil {
		t.Fatal(err)
	}
}

// TestBlackHole: the link stops forwarding while both sockets stay open.
// The server frees the port within heartbeat_timeout plus one sweep, the
// client notices by itself, and both come back once the link forwards again.
func TestBlackHole(t *testing.T) { overTransports(t, testBlackHole) }

func testBlackHole(t *testing.T, tr string) {
	leakCheck(t)
	be := startBackend(t, echo)
	so := fastServer()
	srvLog, srvRec := recordingLogger(t)
	so.Logger = srvLog
	srv := startServer(t, so)
	px := startFaultProxy(t, srv.addr)
	cl := startClientOpts(t, over(tr, fastClient(px.addr, "hole", client.Mapping{Name: "e", LocalAddr: be.addr})))
	port := cl.waitUp(t, "e")["e"]
	if err := echoRoundTrip(port, 1, 64<<10); err != nil {
		t.Fatal(err)
	}

	px.blackhole.Store(true)
	start := time.Now()
	freed := waitFreed(t, port, 5*time.Second)
	if limit := so.HeartbeatTimeout + so.HeartbeatCheckInterval + 500*time.Millisecond; freed > limit {
		t.Errorf("port freed %s after the black hole began, want within heartbeat_timeout + one sweep (+0.5s slack) = %s", freed, limit)
	}
	e := cl.waitEvent(t, client.EventSessionDown, "")
	if !errors.Is(e.Err, control.ErrHeartbeatTimeout) {
		t.Errorf("client session ended with %v, want a heartbeat timeout", e.Err)
	}
	srvRec.waitLog(t, 5*time.Second, "client session ended", "client", "hole")
	t.Logf("port freed after %s, client noticed after %s", freed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	px.blackhole.Store(false)
	port = cl.waitUp(t, "e")["e"]
	if err := echoRoundTrip(port, 2, 64<<10); err != nil {
		t.Fatal(err)
	}
}

// TestBlackHoleThenNewClientSameName: while the old session is black-holed
// (and the heartbeat timeout is long), a new client process with the same
// name gets the ports at once.
func TestBlackHoleThenNewClientSameName(t *testing.T) {
	overTransports(t, testBlackHoleThenNewClientSameName)
}

func testBlackHoleThenNewClientSameName(t *testing.T, tr string) {
	leakCheck(t)
	be := startBackend(t, echo)
	so := fastServer()
	so.HeartbeatTimeout, so.HeartbeatCheckInterval = time.Minute, time.Second
	srv := startServer(t, so)
	px := startFaultProxy(t, srv.addr)
	oldOpts := over(tr, fastClient(px.addr, "twin", client.Mapping{Name: "e", LocalAddr: be.addr}))
	oldOpts.HeartbeatTimeout = time.Minute
	old := startClientOpts(t, oldOpts)
	port := old.waitUp(t, "e")["e"]
	px.blackhole.Store(true)

	start := time.Now()
	fresh := startClientOpts(t, over(tr, fastClient(srv.addr, "twin", client.Mapping{Name: "e", LocalAddr: be.addr, RemotePort: port})))
	if got := fresh.waitUp(t, "e")["e"]; got != port {
		t.Fatalf("new client got port %d, want %d", got, port)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("new client got the port after %s; it must not wait for the old session", took)
	}
	if err := echoRoundTrip(port, 5, 64<<10); err != nil {
		t.Error(err)
	}
	if n := srv.Sessions(); n != 1 {
		t.Errorf("server has %d sessions, want 1", n)
	}
	_ = old.stop(t) // it still believes in its black-holed session
}

// TestLocalServiceDown: the local service stops; the probe takes the
// mapping offline and the server resets each visitor at once; the service
// returns and the mapping is online again without a restart.
func TestLocalServiceDown(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	so := fastServer()
	srvLog, srvRec := recordingLogger(t)
	so.Logger = srvLog
	srv := startServer(t, so)
	cl := startClientOpts(t, fastClient(srv.addr, "svc", client.Mapping{Name: "e", LocalAddr: be.addr, HealthCheck: true}))
	port := cl.waitUp(t, "e")["e"]
	if err := echoRoundTrip(port, 1, 1<<10); err != nil {
		t.Fatal(err)
	}

	be.close()
	cl.waitEvent(t, client.EventMappingOffline, "e")
	srvRec.waitLog(t, 5*time.Second, "mapping offline", "mapping", "e")
	for i := range 3 {
		start := time.Now()
		visitorReset(t, port)
		if took := time.Since(start); took > time.Second {
			t.Errorf("visitor %d of an offline mapping closed after %s, want at once", i, took)
		}
	}
	if !srvRec.has("visitor reset: mapping offline") {
		t.Error("server did not reset visitors as offline (no 'visitor reset: mapping offline' line)")
	}

	back, err := net.Listen("tcp", be.addr)
	if err != nil {
		t.Fatalf("restart the local service on %s: %v", be.addr, err)
	}
	be2 := &backend{ln: back, addr: be.addr}
	be2.wg.Go(func() { be2.serve(echo) })
	t.Cleanup(be2.close)
	cl.waitEvent(t, client.EventMappingOnline, "e")
	srvRec.waitLog(t, 5*time.Second, "mapping online", "mapping", "e")
	if err := echoRoundTrip(port, 2, 1<<10); err != nil {
		t.Errorf("after the service returned: %v", err)
	}
}

// visitorReset dials port and expects the connection to be reset without
// data; a reset that beats the dialer's connect check counts too.
func visitorReset(t *testing.T, port int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", itoa(port)), 2*time.Second)
	if err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("visitor got %v, want a reset", err)
	}
}

// TestWrongTokenOnReconnect: the server comes back with a new token; the
// client must stop (exit 3 in the command) instead of retrying forever.
func TestWrongTokenOnReconnect(t *testing.T) {
	leakCheck(t)
	ln := listen(t)
	addr := ln.Addr().String()
	srv := startServerOn(t, ln, fastServer())
	cl := startClientOpts(t, fastClient(addr, "stale"))
	cl.waitEvent(t, client.EventSessionUp, "")
	srv.stop(t)
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	opts := fastServer()
	opts.Token = "a-rotated-token-the-client-lacks"
	startServerOn(t, ln2, opts)
	select {
	case err := <-cl.done:
		close(cl.done)
		var re *control.RejectError
		if !errors.As(err, &re) || re.Code != control.CodeBadToken {
			t.Errorf("Run = %v, want a 1002 refusal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client still retrying 10s after the server changed its token")
	}
}

// TestReconnectCyclesLeakNothing: 50 reconnects in a row (the link cut each
// time) leave no goroutine and no file descriptor behind.
func TestReconnectCyclesLeakNothing(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	srv := startServer(t, fastServer())
	px := startFaultProxy(t, srv.addr)
	cl := startClientOpts(t, fastClient(px.addr, "cycler", client.Mapping{Name: "e", LocalAddr: be.addr}))
	port := cl.waitUp(t, "e")["e"]
	if err := echoRoundTrip(port, 0, 1<<10); err != nil {
		t.Fatal(err)
	}
	g0, f0 := settle(t)
	for i := range 50 {
		px.cutAll()
		cl.waitEvent(t, client.EventSessionDown, "")
		port = cl.waitUp(t, "e")["e"]
		if i%10 == 9 {
			if err := echoRoundTrip(port, uint64(i), 1<<10); err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
		}
	}
	if err := pollFor(10*time.Second, func() bool {
		g, f := counts()
		return g <= g0 && f <= f0
	}); err != nil {
		g, f := counts()
		t.Errorf("after 50 reconnects: %d goroutines (was %d), %d fds (was %d)", g, g0, f, f0)
	}
}

// settle waits until the goroutine and fd counts stop changing, and
// returns them.
func settle(t *testing.T) (goroutines, fds int) {
	t.Helper()
	g, f := counts()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		g2, f2 := counts()
		if g2 == g && f2 == f {
			return g, f
		}
		g, f = g2, f2
	}
	return g, f
}

func counts() (goroutines, fds int) {
	ents, _ := os.ReadDir("/proc/self/fd")
	return runtime.NumGoroutine(), len(ents)
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestFailedAttemptsLoggedAndBounded: a server that hangs up at once, and
// one that accepts TCP but never answers, are failed attempts like any
// other: each is logged once with its code and the next wait, and
// max_retries ends the loop.
func TestFailedAttemptsLoggedAndBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		hold bool
	}{{"hangs up", false}, {"never answers", true}} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			ln := listen(t)
			var held []net.Conn
			var mu sync.Mutex
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					if !tc.hold {
						c.Close()
						continue
					}
					mu.Lock()
					held = append(held, c)
					mu.Unlock()
				}
			})
			t.Cleanup(func() {
				ln.Close()
				wg.Wait()
				for _, c := range held {
					c.Close()
				}
			})
			logger, rec := recordingLogger(t)
			opts := fastClient(ln.Addr().String(), "doomed")
			opts.HandshakeTimeout = 100 * time.Millisecond
			opts.Reconnect = client.ReconnectOptions{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond, Factor: 2, MaxRetries: 5}
			opts.Logger = logger
			cl := startClientOpts(t, opts)
			select {
			case err := <-cl.done:
				close(cl.done)
				if err == nil || !strings.Contains(err.Error(), "gave up after 6 attempts") {
					t.Errorf("Run = %v, want it to give up after 6 attempts", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("client still retrying after 10s with max_retries = 5")
			}
			if n := rec.count("disconnected", "code", "1001"); n != 5 {
				t.Errorf("%d 'disconnected' lines with code 1001, want one per retried failure (5)", n)
			}
			for _, r := range rec.recs {
				if r.Msg == "disconnected" && r.Attrs["retry_in"] == "" {
					t.Errorf("failure logged without the next wait: %v", r.Attrs)
				}
			}
			if n := rec.count("giving up", "code", "1001"); n != 1 {
				t.Errorf("%d 'giving up' lines, want 1", n)
			}
		})
	}
}

// TestLocalServiceUnreachableWithoutProbe: with the health check off, a
// visitor of a mapping whose local service is down is still reset at once
// (the client answers the data stream with 2001), and the client's warning
// is rate-limited.
func TestLocalServiceUnreachableWithoutProbe(t *testing.T) {
	leakCheck(t)
	dead := listen(t)
	addr := dead.Addr().String()
	dead.Close() // a port where nothing listens: the dial is refused
	srv := startServer(t, fastServer())
	logger, rec := recordingLogger(t)
	opts := fastClient(srv.addr, "noprobe", client.Mapping{Name: "gone", LocalAddr: addr})
	opts.Logger = logger
	cl := startClientOpts(t, opts)
	port := cl.waitUp(t, "gone")["gone"]
	for range 3 {
		start := time.Now()
		visitorReset(t, port)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("visitor reset after %s, want at once", took)
		}
	}
	if n := rec.count("local service unreachable", "code", "2001"); n != 1 {
		t.Errorf("%d 'local service unreachable' lines for 3 visitors within 10s, want 1", n)
	}
}

// TestPortInUseRetriedWhileSessionLives: the wanted port is held by another
// program; the mapping is refused with 1004 and registered again, by
// itself, once the port is free.
func TestPortInUseRetriedWhileSessionLives(t *testing.T) {
	leakCheck(t)
	squatter := listen(t)
	port := squatter.Addr().(*net.TCPAddr).Port
	be := startBackend(t, echo)
	srv := startServer(t, fastServer())
	cl := startClientOpts(t, fastClient(srv.addr, "patient", client.Mapping{Name: "p", LocalAddr: be.addr, RemotePort: port}))
	e := cl.waitEvent(t, client.EventMappingFailed, "p")
	var re *control.RejectError
	if !errors.As(e.Err, &re) || re.Code != control.CodePortInUse {
		t.Fatalf("mapping failed with %v, want 1004", e.Err)
	}
	cl.waitEvent(t, client.EventMappingFailed, "p") // it tries again
	squatter.Close()
	if got := cl.waitUp(t, "p")["p"]; got != port {
		t.Fatalf("mapping came up on %d, want %d", got, port)
	}
	if n := countEvents(cl.events, client.EventSessionDown); n != 0 {
		t.Errorf("the session went down %d times while retrying a registration", n)
	}
	if err := echoRoundTrip(port, 4, 4<<10); err != nil {
		t.Error(err)
	}
}
