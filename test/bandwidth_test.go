package test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// sourceOf is a backend that writes n bytes of seed's stream to each
// connection, then closes it.
func sourceOf(t *testing.T, seed uint64, n int64) (*backend, [32]byte) {
	t.Helper()
	want, _ := stream(io.Discard, seed, n)
	return startBackend(t, func(c net.Conn) {
		_, _ = stream(c, seed, n)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = c.Read(make([]byte, 1)) // until the visitor's end
	}), want
}

// timedDownload reads port to EOF and checks the bytes; it returns how
// long that took.
func timedDownload(t *testing.T, port int, n int64, want [32]byte) time.Duration {
	t.Helper()
	start := time.Now()
	v := dialPort(t, port)
	defer v.Close()
	_ = v.SetDeadline(time.Now().Add(30 * time.Second))
	got, sum, err := drain(v)
	if err != nil || got != n || sum != want {
		t.Errorf("download: %d bytes (err %v, sum match %v), want %d intact", got, err, sum == want, n)
	}
	return time.Since(start)
}

// hashSink is a backend that reads a connection to EOF and answers
// with the SHA-256 of what it read: the bytes back are few.
func hashSink(t *testing.T) *backend {
	return startBackend(t, func(c net.Conn) {
		_, sum, _ := drain(c)
		_, _ = c.Write(sum[:])
		_ = c.(*net.TCPConn).CloseWrite()
	})
}

// timedUpload sends n bytes of seed's stream to a hashSink through port
// and checks the hash it answers; it returns how long that took.
func timedUpload(t *testing.T, port int, seed uint64, n int64) time.Duration {
	t.Helper()
	start := time.Now()
	v := dialPort(t, port)
	defer v.Close()
	_ = v.SetDeadline(time.Now().Add(30 * time.Second))
	sent, err := stream(v, seed, n)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	_ = v.CloseWrite()
	var got [32]byte
	if _, err := io.ReadFull(v, got[:]); err != nil || got != sent {
		t.Errorf("upload: sink's hash %x (err %v), want %x", got, err, sent)
	}
	return time.Since(start)
}

// TestBandwidthLimit: a mapping's bandwidth_limit holds a download (the
// client's limit on what the local service sends) and an upload to a
// sink that answers with 32 bytes (the server's limit on what the
// visitor sends, from register.bandwidth) to about its rate, bytes
// intact; an unlimited mapping of the same client is not held.
//
// 1 MiB/s with its 100 KiB burst: 1 MiB takes at least 0.9 s; the
// assertion leaves room (no upper bound: a slow machine only makes it
// slower).
func TestBandwidthLimit(t *testing.T) {
	leakCheck(t)
	const n = 1 << 20
	src, want := sourceOf(t, 1, n)
	sink := hashSink(t)
	srv := startServer(t, server.Options{})
	cl := startClient(t, srv.addr, "bw",
		client.Mapping{Name: "down", LocalAddr: src.addr, BandwidthLimit: 1 << 20},
		client.Mapping{Name: "up", LocalAddr: sink.addr, BandwidthLimit: 1 << 20},
		client.Mapping{Name: "free", LocalAddr: src.addr})
	ports := cl.waitUp(t, "down", "up", "free")
	// Both sides' status shows the limits.
	for _, m := range srv.Status().Clients[0].Mappings {
		if want := map[string]int64{"down": 1 << 20, "up": 1 << 20}[m.Name]; m.BandwidthLimit != want {
			t.Errorf("server status: %s's limit = %d, want %d", m.Name, m.BandwidthLimit, want)
		}
	}
	for _, m := range cl.Status().Mappings {
		if want := map[string]int64{"down": 1 << 20, "up": 1 << 20}[m.Name]; m.BandwidthLimit != want {
			t.Errorf("client status: %s's limit = %d, want %d", m.Name, m.BandwidthLimit, want)
		}
	}
	if d := timedDownload(t, ports["down"], n, want); d < 600*time.Millisecond {
		t.Errorf("1 MiB download at 1 MiB/s took %v, want at least 600ms", d)
	}
	if d := timedUpload(t, ports["up"], 2, n); d < 600*time.Millisecond {
		t.Errorf("1 MiB upload at 1 MiB/s took %v, want at least 600ms", d)
	}
	// The same 1 MiB through the unlimited mapping, while the limited one
	// is busy: it is through before the limited download (about 0.9 s).
	done := make(chan struct{})
	go func() {
		defer close(done)
		timedDownload(t, ports["down"], n, want)
	}()
	timedDownload(t, ports["free"], n, want)
	select {
	case <-done:
		t.Error("the limited download ended before the unlimited one beside it")
	default:
	}
	<-done

	// The time the limits held bytes back shows in the status of the side
	// that holds them (the client: downloads, from the local service; the
	// server: uploads, from visitors); an unlimited mapping was never held.
	for _, m := range srv.Status().Clients[0].Mappings {
		if held := m.LimitWaitIn > 0; held != (m.Name == "up") || m.LimitWaitOut != 0 {
			t.Errorf("server status: %s held in %v, out %v; want only up's uploads held", m.Name, m.LimitWaitIn, m.LimitWaitOut)
		}
	}
	for _, m := range cl.Status().Mappings {
		if held := m.LimitWaitOut > 0; held != (m.Name == "down") || m.LimitWaitIn != 0 {
			t.Errorf("client status: %s held in %v, out %v; want only down's downloads held", m.Name, m.LimitWaitIn, m.LimitWaitOut)
		}
	}
}

// TestBandwidthPerClient: the server's max_bandwidth_per_client is one
// limit for all of a client's mappings: two downloads through two
// mappings share it.
func TestBandwidthPerClient(t *testing.T) {
	leakCheck(t)
	const n = 512 << 10
	src, want := sourceOf(t, 3, n)
	srv := startServer(t, server.Options{MaxBandwidthPerClient: 1 << 20})
	cl := startClient(t, srv.addr, "capped",
		client.Mapping{Name: "a", LocalAddr: src.addr},
		client.Mapping{Name: "b", LocalAddr: src.addr})
	ports := cl.waitUp(t, "a", "b")
	// Two mappings share the client's 1 MiB/s: 1 MiB in all, less the
	// burst, takes at least 0.9 s.
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		timedDownload(t, ports["a"], n, want)
	}()
	timedDownload(t, ports["b"], n, want)
	<-done
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("2 × 512 KiB under max_bandwidth_per_client = 1 MiB/s took %v, want at least 600ms", d)
	}
	// The status shows the client's limit, and that it held both
	// mappings' downloads back (the server limits what it writes to
	// visitors), though neither has a limit of its own.
	c := srv.Status().Clients[0]
	if c.BandwidthLimit != 1<<20 {
		t.Errorf("server status: the client's bandwidth limit = %d, want %d", c.BandwidthLimit, 1<<20)
	}
	var held time.Duration
	for _, m := range c.Mappings {
		held += m.LimitWaitOut
		if m.BandwidthLimit != 0 || m.LimitWaitIn != 0 {
			t.Errorf("server status: %s has limit %d and held in %v, want none", m.Name, m.BandwidthLimit, m.LimitWaitIn)
		}
	}
	if held <= 0 {
		t.Errorf("server status: the downloads under max_bandwidth_per_client were held %v, want more than 0", held)
	}
}

// TestBandwidthOldServer: towards a server that does not name the
// bandwidth feature, a limited mapping is registered without the field,
// comes up, and the client warns that the visitors' direction is not
// limited.
func TestBandwidthOldServer(t *testing.T) {
	leakCheck(t)
	ln, registers := startOldServer(t)
	log, logs := recordingLogger(t)
	opts := fastClient(ln.Addr().String(), "newer", client.Mapping{Name: "web", LocalAddr: "127.0.0.1:1", BandwidthLimit: 10 << 20})
	opts.Logger = log
	cl := startClientOpts(t, opts)
	cl.waitUp(t, "web")
	select {
	case r := <-registers:
		if r.Bandwidth != 0 {
			t.Errorf("the old server got register.bandwidth %d, want it left out", r.Bandwidth)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the old server got no register")
	}
	logs.waitLog(t, 5*time.Second, "the server does not limit bandwidth", "mapping", "web")
}
