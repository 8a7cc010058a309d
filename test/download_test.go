package test

import (
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// download is a visitor's download read at a steady pace, as a slow
// visitor reads, until its end; then the visitor closes its connection.
type download struct {
	pr   *pacedReader
	done chan struct{}
	// set once done is closed
	n   int64
	sum [32]byte
	err error
	at  time.Time // when reading ended
}

// startDownload reads v at rate bytes per second in a goroutine of its
// own, joined by wait.
func startDownload(v net.Conn, rate int64) *download {
	d := &download{pr: &pacedReader{r: v, rate: rate, start: time.Now()}, done: make(chan struct{})}
	go func() {
		d.n, d.sum, d.err = drain(d.pr)
		d.at = time.Now()
		v.Close() // done, as a visitor would be
		close(d.done)
	}()
	return d
}

// wait waits up to within for the download's end; it fails the test
// unless the download is want bytes of the given hash with a clean EOF.
func (d *download) wait(t *testing.T, within time.Duration, size int64, want [32]byte) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(within):
		t.Fatalf("the download still runs after %s (%d of %d bytes)", within, d.pr.count.Load(), size)
	}
	if d.err != nil || d.n != size || d.sum != want {
		t.Fatalf("the visitor got %d of %d bytes (hash match %v), end %v; want every byte and a clean EOF", d.n, size, d.sum == want, d.err)
	}
}

// requestBackend is a local service that reads a request to its
// half-close, then answers size bytes of seed and closes.
func requestBackend(t *testing.T, seed uint64, size int64) *backend {
	return startBackend(t, func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c)
		_, _ = stream(c, seed, size)
	})
}

// request dials port as a slow visitor would (a small receive window, so
// the answer waits in the tunnel, not in the visitor's socket), sends a
// request, half-closes, and reads the answer at rate.
func request(t *testing.T, port int, rate int64) *download {
	t.Helper()
	v := dialSmallWindow(t, port)
	if _, err := v.Write([]byte("GET /backup.tar")); err != nil {
		t.Fatal(err)
	}
	_ = v.CloseWrite()
	return startDownload(v, rate)
}

// drainedBy checks a graceful stop of p, signalled at sigterm during d: p
// exits 0, after the download, which ends intact.
func (d *download) drainedBy(t *testing.T, p *proc, sigterm time.Time, size int64, want [32]byte) {
	t.Helper()
	code := p.exitCode(t, 40*time.Second)
	exited := time.Now()
	d.wait(t, 10*time.Second, size, want)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if d.at.After(exited) {
		t.Errorf("the process exited %s before the transfer finished", d.at.Sub(exited))
	}
	t.Logf("SIGTERM at %d MiB of %d; transfer finished %s later; process exited %s after SIGTERM",
		size/10>>20, size>>20, d.at.Sub(sigterm).Round(time.Millisecond), exited.Sub(sigterm).Round(time.Millisecond))
}

// echoThenReset is a visitor that exchanges a few bytes with an echo
// service and then resets its connection. With max_conns_per_mapping = 1
// the previous visitor may hold the place for a few more milliseconds:
// a visitor refused at once tries again, for up to a second.
func echoThenReset(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		err := tryEchoThenReset(port)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tryEchoThenReset(port int) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return err
	}
	v := c.(*net.TCPConn)
	_ = v.SetLinger(0)
	defer v.Close()
	_ = v.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := v.Write([]byte("hello")); err != nil {
		return err
	}
	_, err = io.ReadFull(v, make([]byte, 5))
	return err
}

// sumOf is the hash of size bytes of seed, as stream sends them.
func sumOf(seed uint64, size int64) [32]byte {
	sum, _ := stream(discard{}, seed, size)
	return sum
}
