package test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// Regression tests for the end paths of issue 9: each way a data stream
// ends, aborts or is refused, with the peer slow, late or gone.

// hangingAddr returns a loopback address whose accept queue is full, so
// that a dial to it hangs (the kernel drops the SYN) until the dialler's
// timeout: a local service that is up but does not answer.
func hangingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue; the next SYN is dropped.
	for range 3 {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		if c, err := d.Dial("tcp", addr); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Skip("cannot make a dial hang on this kernel: the accept queue took another connection")
	}
	return addr
}

// dialSmallWindow dials port with a 16 KiB receive buffer, set before the
// handshake so that the window stays small: a slow visitor whose data
// waits in the tunnel, not in its own socket.
func dialSmallWindow(t *testing.T, port int) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
	}}
	c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// TestFinishedDownloadSurvivesClientStop pins issue 9, defect 1: the
// client has relayed the whole answer (4 MiB) to a slow visitor and then
// stops. The visitor must read every byte and a clean end; before the fix
// the server reset it once its buffer ran dry.
func TestFinishedDownloadSurvivesClientStop(t *testing.T) {
	leakCheck(t)
	const size = 4 << 20
	be := requestBackend(t, 11, size)
	srv := startServer(t, server.Options{})
	log, logs := recordingLogger(t)
	opts := fastClient(srv.addr, "fin", client.Mapping{Name: "dl", LocalAddr: be.addr})
	opts.Logger = log
	cl := startClientOpts(t, opts)
	d := request(t, cl.waitUp(t, "dl")["dl"], 2<<20)
	// The client's relay is done: both directions ended cleanly.
	logs.waitLog(t, 15*time.Second, "visitor closed", "mapping", "dl", "bytes_out", strconv.Itoa(size))
	_ = cl.stop(t)
	d.wait(t, 20*time.Second, size, sumOf(11, size))
}

// TestRefusedUploadFreesItsPlace pins issue 9, defect 2: the local dial
// hangs until dial_timeout while a visitor uploads 5 MB; the client
// refuses the stream. The visitor must be reset and its place freed at
// once; before the fix the server's copy blocked on a full window and held
// the place until the session ended.
func TestRefusedUploadFreesItsPlace(t *testing.T) {
	leakCheck(t)
	hang := hangingAddr(t)
	srv := startServer(t, server.Options{MaxConnsPerMapping: 1})
	opts := fastClient(srv.addr, "up", client.Mapping{Name: "hang", LocalAddr: hang})
	opts.DialTimeout = 500 * time.Millisecond
	cl := startClientOpts(t, opts)
	port := cl.waitUp(t, "hang")["hang"]
	for i := range 2 {
		v := dialPort(t, port)
		wrote := make(chan error, 1)
		go func() {
			_ = v.SetWriteDeadline(time.Now().Add(20 * time.Second))
			_, err := stream(v, uint64(i), 5_000_000)
			wrote <- err
		}()
		_ = v.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, rerr := v.Read(make([]byte, 1))
		refused := time.Now()
		if err := pollFor(time.Second, func() bool { return srv.ActiveVisitors() == 0 }); err != nil {
			t.Fatalf("visitor %d: %d visitors still held 1s after the refusal", i, srv.ActiveVisitors())
		}
		t.Logf("visitor %d: place freed %s after the visitor's read ended", i, time.Since(refused).Round(time.Millisecond))
		werr := <-wrote
		// The kernel reports a reset to one call: the read or the write.
		if !errors.Is(rerr, syscall.ECONNRESET) && !errors.Is(werr, syscall.ECONNRESET) {
			t.Errorf("visitor %d: read ended with %v, the upload with %v; want a reset once the client refused", i, rerr, werr)
		}
		v.Close()
	}
}

// TestVisitorResetFreesPlaceAtOnce pins issue 9, defect 3: a visitor that
// resets frees its max_conns_per_mapping place within a second, three
// times in a row; before the fix both sides waited 30 s for each other's
// FIN and the next visitor was refused.
func TestVisitorResetFreesPlaceAtOnce(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	srv := startServer(t, server.Options{MaxConnsPerMapping: 1})
	cl := startClient(t, srv.addr, "rst", client.Mapping{Name: "e", LocalAddr: be.addr})
	port := cl.waitUp(t, "e")["e"]
	for i := range 3 {
		echoThenReset(t, port)
		start := time.Now()
		if err := pollFor(time.Second, func() bool { return srv.ActiveVisitors() == 0 }); err != nil {
			t.Fatalf("round %d: the reset visitor still holds its place after 1s", i)
		}
		t.Logf("round %d: place freed %s after the reset", i, time.Since(start).Round(time.Millisecond))
		if err := echoRoundTrip(port, uint64(i), 256<<10); err != nil {
			t.Errorf("round %d: the next visitor: %v", i, err)
		}
		if err := pollFor(time.Second, func() bool { return srv.ActiveVisitors() == 0 }); err != nil {
			t.Fatalf("round %d: the next visitor's place not freed", i)
		}
	}
}

// TestLateAckAbortIsNotCleanEOF pins issue 9, defect 4: the ack arrives
// after stream_open_timeout, so the server resets the visitor, who had
// sent 1,000 bytes. The local service must see a reset, never the 1,000
// bytes and a clean EOF (it did in 2 of 5 runs before the fix, when the
// stream's FIN overtook the data_channel_reset).
func TestLateAckAbortIsNotCleanEOF(t *testing.T) {
	leakCheck(t)
	ended := make(chan error, 8)
	be := startBackend(t, func(c net.Conn) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, c)
		ended <- err
	})
	srv := startServer(t, server.Options{StreamOpenTimeout: 500 * time.Millisecond, HeartbeatTimeout: 10 * time.Second})
	px := startFaultProxy(t, srv.addr)
	opts := fastClient(px.addr, "late", client.Mapping{Name: "u", LocalAddr: be.addr})
	opts.HeartbeatTimeout, opts.HandshakeTimeout = 10*time.Second, 5*time.Second
	cl := startClientOpts(t, opts)
	port := cl.waitUp(t, "u")["u"]
	px.latency.Store(int64(400 * time.Millisecond)) // the ack's round trip: 800 ms, past the 500 ms
	for i := range 5 {
		v := dialPort(t, port)
		if _, err := v.Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		_ = v.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := v.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("run %d: visitor read %v, want a reset after stream_open_timeout", i, err)
		}
		v.Close()
		select {
		case err := <-ended:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("run %d: the local service's read ended with %v, want a reset: the visitor was reset", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: the local service's connection still open 10s after the visitor was reset", i)
		}
	}
}

// TestRegisterRetryDoesNotKillBusySession pins issue 9, defect 5: a
// mapping refused with 1004 is retried while downloads saturate a slow
// uplink, so each retry's reply waits behind bulk data, past
// handshake_timeout. The session is visibly alive and must stay up, and
// neither side may log the same refusal at warn over and over.
func TestRegisterRetryDoesNotKillBusySession(t *testing.T) {
	leakCheck(t)
	taken := listen(t)
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	be := startBackend(t, func(c net.Conn) { _, _ = stream(c, 3, 256<<10) })
	slog, slogs := recordingLogger(t)
	srv := startServer(t, server.Options{HeartbeatTimeout: 20 * time.Second, Logger: slog})
	px := startFaultProxy(t, srv.addr)
	clog, clogs := recordingLogger(t)
	opts := fastClient(px.addr, "busy",
		client.Mapping{Name: "dl", LocalAddr: be.addr},
		client.Mapping{Name: "taken", LocalAddr: be.addr, RemotePort: takenPort})
	opts.Logger = clog
	opts.HeartbeatTimeout = 20 * time.Second
	opts.HandshakeTimeout = 500 * time.Millisecond
	px.uplinkBps.Store(256 << 10) // before the link is made: a slow link has small buffers
	cl := startClientOpts(t, opts)
	port := cl.waitUp(t, "dl")["dl"]
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			v := dialPort(t, port)
			defer v.Close()
			_ = v.SetReadDeadline(time.Now().Add(60 * time.Second))
			n, _, err := drain(v)
			if err != nil || n != 256<<10 {
				errs <- errors.New("download: " + strconv.FormatInt(n, 10) + " bytes, " + errString(err))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := countEvents(cl.events, client.EventSessionDown); n != 0 {
		t.Errorf("the session went down %d times during the downloads", n)
	}
	if n := slogs.count("mapping refused", "mapping", "taken"); n < 3 {
		t.Errorf("the taken port was refused %d times, want it retried several times", n)
	}
	if n := slogs.countLevel("WARN", "mapping refused", "mapping", "taken"); n != 1 {
		t.Errorf("the server warned %d times about the same refusal, want once", n)
	}
	if n := clogs.countLevel("WARN", "mapping refused; retrying", "mapping", "taken"); n != 1 {
		t.Errorf("the client warned %d times about the same refusal, want once", n)
	}
}

func errString(err error) string {
	if err == nil {
		return "clean end"
	}
	return err.Error()
}

// TestZeroPortKeptAcrossReconnect pins issue 9, defect 6: a mapping with
// remote_port = 0 gets the port it had back after the link is cut and
// after the server restarts; when that port is taken it gets a new one and
// the client says so at warn.
func TestZeroPortKeptAcrossReconnect(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	ln := listen(t)
	addr := ln.Addr().String()
	srv := startServerOn(t, ln, server.Options{AllowPorts: []server.PortRange{{Lo: 20000, Hi: 40000}}})
	px := startFaultProxy(t, addr)
	log, logs := recordingLogger(t)
	opts := fastClient(px.addr, "zero", client.Mapping{Name: "any", LocalAddr: be.addr})
	opts.Logger = log
	cl := startClientOpts(t, opts)
	port := cl.waitUp(t, "any")["any"]

	px.cutAll()
	if got := cl.waitUp(t, "any")["any"]; got != port {
		t.Errorf("after a link cut the mapping came back on %d, want %d", got, port)
	}
	srv.stop(t)
	srv = startServerOn(t, reListen(t, addr), server.Options{AllowPorts: []server.PortRange{{Lo: 20000, Hi: 40000}}})
	if got := cl.waitUp(t, "any")["any"]; got != port {
		t.Errorf("after a server restart the mapping came back on %d, want %d", got, port)
	}
	if err := echoRoundTrip(port, 1, 64<<10); err != nil {
		t.Error(err)
	}

	// Someone else takes the port while the server is down.
	srv.stop(t)
	squatter, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	startServerOn(t, reListen(t, addr), server.Options{AllowPorts: []server.PortRange{{Lo: 20000, Hi: 40000}}})
	if got := cl.waitUp(t, "any")["any"]; got == port {
		t.Errorf("the mapping came back on its taken port %d", got)
	}
	if !logs.has("mapping came back on a new port", "old_port", strconv.Itoa(port)) {
		t.Error("the client did not warn that the mapping's port changed")
	}
}

// reListen binds addr again, retrying while the old socket lets go.
func reListen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := pollFor(5*time.Second, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	}); err != nil {
		t.Fatalf("cannot bind %s again", addr)
	}
	return ln
}

// TestClientShutdownDrains: Client.Shutdown during a download tells the
// server to take no new visitors (they are reset at once, the port stays
// bound), lets the download finish intact, then ends Run with nil.
func TestClientShutdownDrains(t *testing.T) {
	leakCheck(t)
	const size = 32 << 20
	be := startBackend(t, func(c net.Conn) { _, _ = stream(c, 51, size) })
	slog, slogs := recordingLogger(t)
	srv := startServer(t, server.Options{Logger: slog})
	cl := startClient(t, srv.addr, "drainer", client.Mapping{Name: "dl", LocalAddr: be.addr})
	port := cl.waitUp(t, "dl")["dl"]
	d := startDownload(dialPort(t, port), 16<<20)
	if err := pollFor(10*time.Second, func() bool { return d.pr.count.Load() >= 1<<20 }); err != nil {
		t.Fatal("the download did not start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- cl.Shutdown(ctx) }()
	slogs.waitLog(t, 5*time.Second, "mapping draining", "mapping", "dl")
	// The port stays bound, and a new visitor is reset: before its dial
	// returns, or at its first read.
	visitorReset(t, port)
	d.wait(t, 20*time.Second, size, sumOf(51, size))
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v, want nil: every visitor finished", err)
	}
	if err := cl.stop(t); err != nil {
		t.Errorf("Run = %v, want nil after Shutdown", err)
	}
}

// TestClientShutdownCutsAtDeadline: a download that outlasts the grace is
// cut when Shutdown's context ends, as a reset, never as a clean end.
func TestClientShutdownCutsAtDeadline(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	srv := startServer(t, server.Options{})
	cl := startClient(t, srv.addr, "cut", client.Mapping{Name: "inf", LocalAddr: be.addr})
	v := dialPort(t, cl.waitUp(t, "inf")["inf"])
	defer v.Close()
	if _, err := io.ReadFull(v, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, v)
		got <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := cl.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded: a visitor was cut", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Shutdown took %s with a 300ms grace", took)
	}
	select {
	case err := <-got:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the cut download ended with %v, want a reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the visitor still reads 10s after the grace ended")
	}
}
