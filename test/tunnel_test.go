package test

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// bulkBackend reads the visitor's bytes to EOF while it sends its own n
// bytes, then half-closes; it reports what it read and sent.
type bulkResult struct {
	readN   int64
	readSum [32]byte
	sentSum [32]byte
	err     error
}

func TestBytesIntactBothWays(t *testing.T) {
	leakCheck(t)
	const size = 64 << 20
	results := make(chan bulkResult, 1)
	be := startBackend(t, func(c net.Conn) {
		var r bulkResult
		var wg sync.WaitGroup
		wg.Go(func() { r.readN, r.readSum, _ = drain(c) })
		r.sentSum, r.err = stream(c, 2, size)
		_ = c.(*net.TCPConn).CloseWrite()
		wg.Wait()
		results <- r
	})
	srv := startServer(t, server.Options{})
	cl := startClient(t, srv.addr, "bulk", client.Mapping{Name: "bulk", LocalAddr: be.addr})
	port := cl.waitUp(t, "bulk")["bulk"]

	v := dialPort(t, port)
	defer v.Close()
	var got struct {
		n   int64
		sum [32]byte
	}
	var wg sync.WaitGroup
	wg.Go(func() { got.n, got.sum, _ = drain(v) })
	sent, err := stream(v, 1, size)
	if err != nil {
		t.Fatalf("visitor write: %v", err)
	}
	_ = v.CloseWrite()
	wg.Wait()
	be.close()
	r := <-results
	if r.readN != size || r.readSum != sent {
		t.Errorf("backend got %d bytes (sum match %v), want %d intact", r.readN, r.readSum == sent, size)
	}
	if got.n != size || got.sum != r.sentSum {
		t.Errorf("visitor got %d bytes (sum match %v), want %d intact", got.n, got.sum == r.sentSum, size)
	}
}

func TestConcurrentVisitorsOnThreeMappings(t *testing.T) {
	leakCheck(t)
	srv := startServer(t, server.Options{})
	var maps []client.Mapping
	names := []string{"a", "b", "c"}
	for _, n := range names {
		be := startBackend(t, echo)
		maps = append(maps, client.Mapping{Name: n, LocalAddr: be.addr})
	}
	cl := startClient(t, srv.addr, "many", maps...)
	ports := cl.waitUp(t, names...)

	const visitors = 200
	errs := make(chan error, visitors)
	var wg sync.WaitGroup
	for i := range visitors {
		port := ports[names[i%3]]
		wg.Go(func() { errs <- echoRoundTrip(port, uint64(100+i), 64<<10+int64(i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// echoRoundTrip sends n bytes through an echo mapping and checks that the
// same bytes come back, then EOF.
func echoRoundTrip(port int, seed uint64, n int64) error {
	v, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return err
	}
	defer v.Close()
	_ = v.SetDeadline(time.Now().Add(30 * time.Second))
	var got struct {
		n   int64
		sum [32]byte
		err error
	}
	var wg sync.WaitGroup
	wg.Go(func() { got.n, got.sum, got.err = drain(v) })
	sent, err := stream(v, seed, n)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	_ = v.(*net.TCPConn).CloseWrite()
	wg.Wait()
	if got.err != nil || got.n != n || got.sum != sent {
		return fmt.Errorf("port %d seed %d: read %d bytes (err %w, sum match %v), want %d echoed", port, seed, got.n, got.err, got.sum == sent, n)
	}
	return nil
}

// TestHalfCloseVisitorFirst: the visitor sends a request and shuts its
// write side; the backend reads to EOF and only then answers. The answer
// must arrive, then EOF.
func TestHalfCloseVisitorFirst(t *testing.T) { overTransports(t, testHalfCloseVisitorFirst) }

func testHalfCloseVisitorFirst(t *testing.T, tr string) {
	leakCheck(t)
	const reqSize, respSize = 3 << 20, 5 << 20
	backendGot := make(chan [32]byte, 1)
	be := startBackend(t, func(c net.Conn) {
		n, sum, err := drain(c) // to the visitor's EOF
		if err != nil || n != reqSize {
			t.Errorf("backend read %d bytes, err %v; want %d then EOF", n, err, reqSize)
		}
		backendGot <- sum
		_, _ = stream(c, 7, respSize)
		_ = c.(*net.TCPConn).CloseWrite()
	})
	srv := startServer(t, server.Options{})
	cl := startClientOpts(t, over(tr, client.Options{ServerAddr: srv.addr, Name: "hc", Mappings: []client.Mapping{{Name: "hc", LocalAddr: be.addr}}}))
	v := dialPort(t, cl.waitUp(t, "hc")["hc"])
	defer v.Close()
	sent, err := stream(v, 6, reqSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := <-backendGot; got != sent {
		t.Error("backend got a different request")
	}
	n, sum, err := drain(v)
	want, _ := stream(discard{}, 7, respSize)
	if err != nil || n != respSize || sum != want {
		t.Errorf("visitor read %d bytes (err %v, sum match %v), want the %d-byte answer then EOF", n, err, sum == want, respSize)
	}
}

// TestHalfCloseBackendFirst: the backend speaks first and shuts its write
// side; the visitor reads to EOF and only then answers; the backend must
// get the answer.
func TestHalfCloseBackendFirst(t *testing.T) { overTransports(t, testHalfCloseBackendFirst) }

func testHalfCloseBackendFirst(t *testing.T, tr string) {
	leakCheck(t)
	const greetSize, answerSize = 2 << 20, 4 << 20
	backendGot := make(chan int64, 1)
	var answerSum [32]byte
	be := startBackend(t, func(c net.Conn) {
		_, _ = stream(c, 8, greetSize)
		_ = c.(*net.TCPConn).CloseWrite()
		n, sum, _ := drain(c)
		answerSum = sum
		backendGot <- n
	})
	srv := startServer(t, server.Options{})
	cl := startClientOpts(t, over(tr, client.Options{ServerAddr: srv.addr, Name: "hc2", Mappings: []client.Mapping{{Name: "hc2", LocalAddr: be.addr}}}))
	v := dialPort(t, cl.waitUp(t, "hc2")["hc2"])
	defer v.Close()
	n, sum, err := drain(v)
	want, _ := stream(discard{}, 8, greetSize)
	if err != nil || n != greetSize || sum != want {
		t.Fatalf("visitor read %d bytes (err %v, sum match %v), want the %d-byte greeting then EOF", n, err, sum == want, greetSize)
	}
	sent, err := stream(v, 9, answerSize)
	if err != nil {
		t.Fatal(err)
	}
	_ = v.CloseWrite()
	select {
	case got := <-backendGot:
		if got != answerSize || answerSum != sent {
			t.Errorf("backend read %d bytes (sum match %v), want %d", got, answerSum == sent, answerSize)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("backend never saw the answer's EOF")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
