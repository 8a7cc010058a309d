package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The shaper's self-check: real loopback sockets, bounds wide enough for
// a loaded 2-core machine under the race detector (rates within 30 %).

// target is a test service behind the shaper. A connection's first byte
// says what it wants: 'u' reads to the end, then answers the SHA-256 of
// what it read; 'd' and a 4-byte length sends that many bytes of the
// pattern, then closes its side and waits for the peer's end; 'e' echoes
// until the peer's end, then writes "done" and closes.
type target struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	ended chan time.Time // when each 'u' connection's last byte arrived
	hold  chan struct{}  // 'u' connections start reading once this is closed
}

// startTarget starts the service; with hold, its 'u' connections read
// only once release is called.
func startTarget(t *testing.T, hold bool) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &target{ln: ln, ended: make(chan time.Time, 16), hold: make(chan struct{})}
	if !hold {
		close(s.hold)
	}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() { s.serve(c.(*net.TCPConn)) })
		}
	})
	return s
}

func (s *target) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *target) serve(c *net.TCPConn) {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	cmd := make([]byte, 1)
	if _, err := io.ReadFull(c, cmd); err != nil {
		return
	}
	switch cmd[0] {
	case 'u':
		<-s.hold
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		s.ended <- time.Now()
		_, _ = c.Write(h.Sum(nil))
	case 'd':
		var n [4]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		if _, err := c.Write(pattern[:binary.BigEndian.Uint32(n[:])]); err != nil {
			return
		}
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	case 'e':
		if _, err := io.Copy(c, c); err != nil {
			return
		}
		_, _ = c.Write([]byte("done"))
		_ = c.CloseWrite()
	}
}

// joined fails t unless the goroutines are back to n (the shaper joined
// every goroutine it started).
func joined(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after close, %d before:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t *testing.T, addr string, cmd ...byte) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write(cmd); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// The bound that matters is the upper one: a link faster than
// configured would make every shaped figure wrong, and load cannot make
// it faster. A loaded machine does make it slower (its goroutines wake
// late: 0.65x was seen with three test suites on two cores), so the
// lower bound only catches a shaper that is badly off.
func within(t *testing.T, what string, got, want float64) {
	t.Helper()
	t.Logf("%s: %.0f B/s, configured %.0f", what, got, want)
	if got < 0.4*want || got > 1.3*want {
		t.Errorf("%s: %.0f B/s, want %.0f -60%%..+30%%", what, got, want)
	}
}

// Two uploads share the up lane's rate (one link, not a rate per
// connection) while a download runs at the down lane's own rate; every
// byte arrives intact.
func TestShaperRate(t *testing.T) {
	before := runtime.NumGoroutine()
	s := startTarget(t, false)
	const delay = 10 * time.Millisecond
	const upRate, downRate = 1e6, 2e6
	l := newLink(laneConfig{rate: upRate, delay: delay, queue: 64 << 10}, laneConfig{rate: downRate, delay: delay, queue: 64 << 10})
	addr, err := l.forward(s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}

	const upEach, down = 512 << 10, 1 << 20
	start := time.Now()
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	for i := range 2 {
		c := dial(t, addr, 'u')
		wg.Go(func() {
			defer func() { _ = c.Close() }()
			data := pattern[i*upEach : (i+1)*upEach]
			if _, err := c.Write(data); err != nil {
				errs <- err
				return
			}
			_ = c.CloseWrite()
			sum, err := io.ReadAll(c)
			if want := sha256.Sum256(data); err == nil && !bytes.Equal(sum, want[:]) {
				err = errors.New("upload: the target read other bytes than were sent")
			}
			errs <- err
		})
	}
	var downTook time.Duration
	c := dial(t, addr, 'd')
	wg.Go(func() {
		defer func() { _ = c.Close() }()
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], down)
		if _, err := c.Write(n[:]); err != nil {
			errs <- err
			return
		}
		// Timed from the first byte: the request waited in the up lane
		// behind the uploads.
		got := make([]byte, 1, down)
		if _, err := io.ReadFull(c, got); err != nil {
			errs <- err
			return
		}
		first := time.Now()
		rest, err := io.ReadAll(c) // to the target's CloseWrite
		downTook = time.Since(first)
		got = append(got, rest...)
		if err == nil && !bytes.Equal(got, pattern[:down]) {
			err = errors.New("download: other bytes than the target sent")
		}
		errs <- err
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	last := <-s.ended
	if e := <-s.ended; e.After(last) {
		last = e
	}
	within(t, "two uploads together", 2*upEach/(last.Sub(start)-delay).Seconds(), upRate)
	within(t, "one download", down/downTook.Seconds(), downRate)
	l.close()
	s.close()
	joined(t, before)
}

// A byte takes at least the two delays there and back (the burst an idle
// link allows, 1.5 ms at this rate, lets it leave at once, not earlier);
// each side's end of stream passes through, and the other direction
// still works after it.
func TestShaperDelayAndHalfClose(t *testing.T) {
	before := runtime.NumGoroutine()
	s := startTarget(t, false)
	const delay = 30 * time.Millisecond
	cfg := laneConfig{rate: 1e6, delay: delay, queue: 64 << 10}
	l := newLink(cfg, cfg)
	addr, err := l.forward(s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, 'e')
	b := []byte{'x'}
	for range 3 {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(start)
		t.Logf("round trip %s", rtt)
		if rtt < 2*delay || rtt > 2*delay+time.Second {
			t.Errorf("round trip %s, want at least %s and not much more", rtt, 2*delay)
		}
	}
	// Our CloseWrite reaches the echo as an end of stream; its answer
	// after that, and then its own end, come back.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "done" {
		t.Fatalf("after our half-close: read %q, %v; want \"done\" and the end of stream", got, err)
	}
	_ = c.Close()
	l.close()
	s.close()
	joined(t, before)
}

// A receiver that does not read holds the shaper to its bounds: the
// queue to its size, the connection to its cap; nothing is lost.
func TestShaperBackpressure(t *testing.T) {
	before := runtime.NumGoroutine()
	s := startTarget(t, true)
	cfg := laneConfig{rate: 20e6, delay: 5 * time.Millisecond, queue: 64 << 10}
	l := newLink(cfg, cfg)
	addr, err := l.forward(s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, 'u')
	var sent int64
	h := sha256.New()
	writeErr := make(chan error, 1)
	go func() {
		// Write until the kernel buffers and the shaper push back.
		_ = c.SetWriteDeadline(time.Now().Add(700 * time.Millisecond))
		for {
			n, err := c.Write(pattern[:64<<10])
			h.Write(pattern[:n])
			sent += int64(n)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					err = nil
				}
				writeErr <- err
				return
			}
		}
	}()
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	var p *pipe
	for p = range l.pipes {
	}
	l.mu.Unlock()
	l.up.mu.Lock()
	queued, pending, limit := l.up.queued, p.up.pending, p.up.cap
	l.up.mu.Unlock()
	t.Logf("wrote %d bytes into a receiver that does not read; shaper holds %d queued, %d on the way (cap %d)", sent, queued, pending, limit)
	if queued > cfg.queue+mtu || pending > limit+readSize {
		t.Errorf("shaper holds %d queued (queue %d), %d on the way (cap %d)", queued, cfg.queue, pending, limit)
	}
	close(s.hold)
	_ = c.SetWriteDeadline(time.Time{})
	_ = c.CloseWrite()
	sum, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(sum, h.Sum(nil)) {
		t.Errorf("after the receiver read: hash %x, %v; want the hash of the %d bytes sent", sum, err, sent)
	}
	_ = c.Close()
	l.close()
	s.close()
	joined(t, before)
}
