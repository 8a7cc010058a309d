package test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"go.uber.org/goleak"
)

const testToken = "test-token-0123456789abcdef"

// leakCheck registers the goroutine-leak check; call it first in a test so
// that it runs after every other cleanup.
func leakCheck(t testing.TB) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
}

// testLogger writes to the test log when -v, else discards.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() && os.Getenv("TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// listen returns a loopback listener on a port the kernel picks.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

type testServer struct {
	*server.Server
	addr string
	done chan error
}

// startServer runs a server on a fresh loopback port until the test ends.
func startServer(t testing.TB, opts server.Options) *testServer {
	t.Helper()
	return startServerOn(t, listen(t), opts)
}

// startServerOn runs a server on ln until the test ends or stop is called.
func startServerOn(t testing.TB, ln net.Listener, opts server.Options) *testServer {
	t.Helper()
	if opts.Token == "" {
		opts.Token = testToken
	}
	if opts.PublicAddr == "" {
		opts.PublicAddr = "127.0.0.1"
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t).With("side", "server")
	}
	srv := server.New(opts)
	s := &testServer{Server: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ln) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop closes the server abruptly and waits for Serve to return.
func (s *testServer) stop(t testing.TB) {
	t.Helper()
	_ = s.Close()
	if err, ok := <-s.done; ok {
		close(s.done)
		if !errors.Is(err, server.ErrClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	}
}

type testClient struct {
	*client.Client
	events chan client.Event
	cancel context.CancelFunc
	done   chan error
}

// startClient runs a client until the test ends (or stop is called).
func startClient(t testing.TB, addr, name string, maps ...client.Mapping) *testClient {
	t.Helper()
	return startClientOpts(t, client.Options{ServerAddr: addr, Name: name, Mappings: maps})
}

func startClientOpts(t testing.TB, opts client.Options) *testClient {
	t.Helper()
	if opts.Token == "" {
		opts.Token = testToken
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t).With("side", "client", "name", opts.Name)
	}
	if opts.Reconnect.Min == 0 {
		opts.Reconnect = client.ReconnectOptions{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond, Factor: 2}
	}
	events := make(chan client.Event, 1024)
	opts.OnEvent = func(e client.Event) {
		select {
		case events <- e:
		default:
			t.Errorf("event channel full, dropped %+v", e)
		}
	}
	cl, err := client.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &testClient{Client: cl, events: events, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- cl.Run(ctx) }()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop ends the client's Run and waits for it.
func (c *testClient) stop(t testing.TB) error {
	t.Helper()
	c.cancel()
	select {
	case err, ok := <-c.done:
		if ok {
			close(c.done)
			return err
		}
		return nil
	case <-time.After(10 * time.Second):
		t.Fatal("client did not stop within 10s")
		return nil
	}
}

// waitEvent waits for the next event of kind for mapping (any mapping when
// ""), skipping others.
func (c *testClient) waitEvent(t testing.TB, kind client.EventKind, mapping string) client.Event {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case e := <-c.events:
			if e.Kind == kind && (mapping == "" || e.Mapping == mapping) {
				return e
			}
		case <-timeout:
			t.Fatalf("no event %d for %q within 15s", kind, mapping)
		}
	}
}

// waitUp waits until every named mapping is up and returns their ports.
func (c *testClient) waitUp(t testing.TB, names ...string) map[string]int {
	t.Helper()
	ports := map[string]int{}
	timeout := time.After(15 * time.Second)
	for len(ports) < len(names) {
		select {
		case e := <-c.events:
			if e.Kind == client.EventMappingUp {
				ports[e.Mapping] = e.RemotePort
			}
		case <-timeout:
			t.Fatalf("mappings up within 15s: %v, want %v", ports, names)
		}
	}
	return ports
}

// backend is a local service on loopback run by a handler per connection.
type backend struct {
	ln   net.Listener
	wg   sync.WaitGroup
	addr string
}

func startBackend(t testing.TB, h func(net.Conn)) *backend {
	t.Helper()
	b := &backend{ln: listen(t)}
	b.addr = b.ln.Addr().String()
	b.wg.Go(func() { b.serve(h) })
	t.Cleanup(b.close)
	return b
}

func (b *backend) serve(h func(net.Conn)) {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Go(func() {
			defer c.Close()
			h(c)
		})
	}
}

func (b *backend) close() {
	_ = b.ln.Close()
	b.wg.Wait()
}

// echo copies everything back, then half-closes.
func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
}

// stream writes n deterministic pseudo-random bytes from seed to w and
// returns their SHA-256.
func stream(w io.Writer, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	buf := make([]byte, 64<<10)
	for n > 0 {
		chunk := buf[:min(int64(len(buf)), n)]
		_, _ = src.Read(chunk)
		h.Write(chunk)
		if _, err := w.Write(chunk); err != nil {
			return [32]byte{}, err
		}
		n -= int64(len(chunk))
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// drain reads r to EOF and returns the byte count and SHA-256.
func drain(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

func dialPort(t testing.TB, port int) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}
