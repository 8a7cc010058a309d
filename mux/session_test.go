package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair runs a client and a server session over a real loopback TCP
// connection.
func pair(t testing.TB, opts Options) (cli, srv *Session) {
	t.Helper()
	return pairWrapped(t, opts, func(c net.Conn) net.Conn { return c })
}

// pairWrapped is pair with the server's connection passed through wrap.
func pairWrapped(t testing.TB, opts Options, wrap func(net.Conn) net.Conn) (cli, srv *Session) {
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
	cli, err = Client(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err = Server(wrap(<-accepted), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close(); _ = srv.Close() })
	return cli, srv
}

func acceptControl(t *testing.T, srv *Session) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := srv.AcceptControl(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRoles(t *testing.T) {
	cli, srv := pair(t, Options{})
	ctl, err := cli.OpenControl()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Write([]byte("x")); err != nil { // a stream exists for the peer once written
		t.Fatal(err)
	}
	sctl := acceptControl(t, srv)
	if _, err := cli.OpenControl(); !errors.Is(err, ErrRole) {
		t.Errorf("second OpenControl = %v, want ErrRole", err)
	}
	if _, err := srv.AcceptControl(context.Background()); !errors.Is(err, ErrRole) {
		t.Errorf("second AcceptControl = %v, want ErrRole", err)
	}
	if _, err := cli.Open(); !errors.Is(err, ErrRole) {
		t.Errorf("client Open = %v, want ErrRole", err)
	}
	if _, err := srv.Accept(); !errors.Is(err, ErrRole) {
		t.Errorf("server Accept = %v, want ErrRole", err)
	}
	if _, err := srv.OpenControl(); !errors.Is(err, ErrRole) {
		t.Errorf("server OpenControl = %v, want ErrRole", err)
	}
	if _, err := cli.AcceptControl(context.Background()); !errors.Is(err, ErrRole) {
		t.Errorf("client AcceptControl = %v, want ErrRole", err)
	}
	// A data stream from the server reaches the client's Accept.
	ds, err := srv.Open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	cs, err := cli.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(cs, buf); err != nil || string(buf) != "data" {
		t.Errorf("data stream read %q, %v", buf, err)
	}
	if cs.Session() != cli || sctl.Session() != srv {
		t.Error("Stream.Session is not its session")
	}
}

// TestStrayStreamsCancelContext: client-opened streams after control are
// closed, and past the limit the session's Context says why.
func TestStrayStreamsCancelContext(t *testing.T) {
	cli, srv := pair(t, Options{MaxStrayStreams: 2})
	ctl, _ := cli.OpenControl()
	_, _ = ctl.Write([]byte("x"))
	acceptControl(t, srv)
	srv.Trust()
	for i := range 3 {
		st, err := cli.ys.OpenStream() // around the role check, as a hostile client would
		if err != nil {
			t.Fatal(err)
		}
		_, _ = st.Write([]byte{byte(i)})
		// The server closes it: our read ends with EOF.
		_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("stray stream %d read = %v, want EOF", i, err)
		}
	}
	select {
	case <-srv.Context().Done():
		if cause := context.Cause(srv.Context()); !errors.Is(cause, ErrStrayStreams) {
			t.Errorf("cause = %v, want ErrStrayStreams", cause)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled after 3 stray streams with a limit of 2")
	}
}

// TestDeadSessionIsNotEOF: a stream whose session died reads
// ErrSessionClosed; one the peer closed reads io.EOF.
func TestDeadSessionIsNotEOF(t *testing.T) {
	cli, srv := pair(t, Options{})
	ctl, _ := cli.OpenControl()
	_, _ = ctl.Write([]byte("x"))
	sctl := acceptControl(t, srv)
	_, _ = io.ReadFull(sctl, make([]byte, 1))

	ds, _ := srv.Open()
	_, _ = ds.Write([]byte("a"))
	cs, err := cli.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadFull(cs, make([]byte, 1))
	_ = ds.CloseWrite()
	if _, err := cs.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read after peer close = %v, want io.EOF", err)
	}

	blocked := make(chan error, 1)
	go func() {
		_, err := ctl.Read(make([]byte, 1))
		blocked <- err
	}()
	_ = srv.Close()
	select {
	case err := <-blocked:
		if !errors.Is(err, ErrSessionClosed) {
			t.Errorf("blocked read when the session died = %v, want ErrSessionClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked read did not wake when the session died")
	}
	<-cli.Context().Done()
	if !cli.IsClosed() {
		t.Error("IsClosed false after Done")
	}
	if cause := context.Cause(cli.Context()); !errors.Is(cause, ErrSessionClosed) {
		t.Errorf("cause = %v, want ErrSessionClosed", cause)
	}
	if _, err := cli.Accept(); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("Accept on a dead session = %v", err)
	}
	if _, err := srv.Open(); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("Open on a dead session = %v", err)
	}
}

func TestLastReadAdvances(t *testing.T) {
	cli, srv := pair(t, Options{})
	before := srv.LastRead()
	time.Sleep(5 * time.Millisecond) // the clock must move between the two readings
	ctl, _ := cli.OpenControl()
	_, _ = ctl.Write([]byte("x"))
	sctl := acceptControl(t, srv)
	_, _ = io.ReadFull(sctl, make([]byte, 1))
	if !srv.LastRead().After(before) {
		t.Errorf("LastRead %v not after %v", srv.LastRead(), before)
	}
	if srv.NumStreams() != 1 || srv.RemoteAddr() == nil || srv.LocalAddr() == nil {
		t.Errorf("NumStreams %d, addrs %v %v", srv.NumStreams(), srv.RemoteAddr(), srv.LocalAddr())
	}
	if err := srv.GoAway(); err != nil {
		t.Errorf("GoAway = %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := Client(a, Options{WindowSize: 1024}); err == nil {
		t.Error("Client with a 1 KiB window = nil error, want refused (yamux minimum is 256 KiB)")
	}
	s, err := Server(b, Options{KeepAlive: time.Hour})
	if err != nil {
		t.Fatalf("Server with keepalive = %v", err)
	}
	_ = s.Close()
}

func TestYamuxLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := yamuxLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Printf("[ERR] yamux: Invalid protocol version: %d", 71)
	l.Print("[WARN] yamux: frame for missing stream")
	l.Println("[ERR] yamux: Failed to write header: write tcp: use of closed network connection")
	l.Printf("[ERR] yamux: Failed to read header: %v", "failed to get reader: failed to read frame header: EOF")
	l.Printf("[ERR] yamux: Failed to read header: %v", "failed to get reader: context canceled")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"level=WARN", "level=WARN", "level=DEBUG", "level=DEBUG", "level=DEBUG"}
	for i, w := range want {
		if i >= len(lines) || !strings.Contains(lines[i], w) || !strings.Contains(lines[i], "msg=yamux") {
			t.Errorf("line %d = %q, want %s msg=yamux", i, lines, w)
		}
	}
	if !strings.Contains(lines[0], `detail="Invalid protocol version: 71"`) {
		t.Errorf("line 0 = %q, want the detail without prefixes", lines[0])
	}
	yamuxLogger{}.Print("no logger: discarded")
}
