package mux

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Frames as yamux's send loop writes them: a data frame's header, then its
// body in a second call; a window update (here with SYN) alone.
var (
	dataHdr  = []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3} // data frame, stream 1, 3 bytes
	dataBody = []byte("abc")
	window   = []byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 0, 0} // window update, stream 1
)

// queueConn is a conn over one end of a net.Pipe, whose writes block
// until the other end reads; peer is that end.
func queueConn(t *testing.T) (c *conn, peer net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	c = newConn(a, newBook(false, 0))
	t.Cleanup(func() { _ = c.Close(); _ = b.Close() })
	return c, b
}

func writeAll(t *testing.T, c *conn, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if n, err := c.Write(f); n != len(f) || err != nil {
			t.Fatalf("Write(%x) = %d, %v", f, n, err)
		}
	}
}

// waitTaken waits until writeLoop has taken everything queued.
func waitTaken(t *testing.T, c *conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		n := len(c.queued)
		c.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writeLoop never took the queue")
		}
		time.Sleep(time.Millisecond)
	}
}

func readChunk(t *testing.T, peer net.Conn) []byte {
	t.Helper()
	buf := make([]byte, 1024)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := peer.Read(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf[:n]
}

// TestQueuedFramesGoOutTogether: a frame goes out at once; the frames
// written while that write is under way go out together, in order, in
// one write, and a data frame's header never leaves without its body.
func TestQueuedFramesGoOutTogether(t *testing.T) {
	c, peer := queueConn(t)
	writeAll(t, c, window)
	waitTaken(t, c) // writeLoop is in the pipe's Write, which waits for our read
	writeAll(t, c, dataHdr)
	c.mu.Lock()
	held := len(c.queued)
	c.mu.Unlock()
	if held != 0 {
		t.Fatalf("a data header was queued alone (%d bytes)", held)
	}
	writeAll(t, c, dataBody, window)
	if got := readChunk(t, peer); !bytes.Equal(got, window) {
		t.Fatalf("first write = %x, want %x", got, window)
	}
	want := bytes.Join([][]byte{dataHdr, dataBody, window}, nil)
	if got := readChunk(t, peer); !bytes.Equal(got, want) {
		t.Errorf("second write = %x, want the two queued frames in one write: %x", got, want)
	}
}

// TestQueueHoldsOneFrame: with room for one frame, a frame written while
// another waits ahead of a write under way waits too: no write carries
// more than the room (the latency the scheduler counts on).
func TestQueueHoldsOneFrame(t *testing.T) {
	c, peer := queueConn(t)
	c.room = func() int { return len(window) + 4 }
	done := make(chan error, 1)
	go func() {
		for range 5 {
			if _, err := c.Write(window); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var got []byte
	for len(got) < 5*len(window) {
		chunk := readChunk(t, peer)
		if len(chunk) > len(window)+4 {
			t.Fatalf("a write carried %d bytes, more than the room of %d", len(chunk), len(window)+4)
		}
		got = append(got, chunk...)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := bytes.Repeat(window, 5); !bytes.Equal(got, want) {
		t.Errorf("read %x, want %x", got, want)
	}
}

// TestCloseWritesWhatIsQueued: a frame written just before Close (a
// refusal, an error frame) still reaches the peer, then the connection
// ends.
func TestCloseWritesWhatIsQueued(t *testing.T) {
	c, peer := queueConn(t)
	writeAll(t, c, window)
	waitTaken(t, c)
	writeAll(t, c, dataHdr, dataBody, window)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := bytes.Join([][]byte{window, dataHdr, dataBody, window}, nil)
	if b := <-got; !bytes.Equal(b, want) {
		t.Errorf("peer read %x, want %x", b, want)
	}
	if _, err := c.Write(window); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
}

// TestCloseOnStalledPeer: when the peer reads nothing, Close gives up on
// what is queued (after closeFlush) and still closes.
func TestCloseOnStalledPeer(t *testing.T) {
	c, _ := queueConn(t)
	writeAll(t, c, window)
	waitTaken(t, c)
	writeAll(t, c, window)
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a peer that reads nothing")
	}
	if _, err := c.Write(window); err == nil {
		t.Error("Write after Close succeeded")
	}
}

// TestWriteErrorFailsLaterWrites: once a write to the connection failed,
// the send loop's next write fails too (yamux then ends the session).
func TestWriteErrorFailsLaterWrites(t *testing.T) {
	c, peer := queueConn(t)
	_ = peer.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Write(window); err != nil {
			if !errors.Is(err, io.ErrClosedPipe) {
				t.Errorf("Write = %v, want the connection's error (io: read/write on closed pipe)", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writes kept succeeding on a closed connection")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLargeFrameKeepsItsPlace: a large data frame is written by the send
// loop itself only when nothing is queued or being written; otherwise it
// queues behind the frames written before it.
func TestLargeFrameKeepsItsPlace(t *testing.T) {
	c, peer := queueConn(t)
	body := bytes.Repeat([]byte{7}, directFrame)
	hdr := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, byte(len(body) >> 8), byte(len(body))}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	writeAll(t, c, hdr, body) // idle: written at once
	writeAll(t, c, window)
	writeAll(t, c, hdr, body) // behind the window update, if it still waits
	writeAll(t, c, window)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := bytes.Join([][]byte{hdr, body, window, hdr, body, window}, nil)
	if b := <-got; !bytes.Equal(b, want) {
		t.Errorf("peer read %d bytes, want %d in the order written", len(b), len(want))
	}
}

// TestSlowLinkWritesOneFrameAtATime: when the link is slow (its frame
// smaller than maxFrame), the send loop writes each frame itself, one at
// a time: nothing waits in the queue behind a write under way.
func TestSlowLinkWritesOneFrameAtATime(t *testing.T) {
	c, peer := queueConn(t)
	c.room = func() int { return 4 << 10 }
	done := make(chan error, 1)
	go func() {
		for range 5 {
			if _, err := c.Write(window); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range 5 {
		if got := readChunk(t, peer); !bytes.Equal(got, window) {
			t.Fatalf("write %d = %x, want one frame %x", i, got, window)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.looped.Load() {
		t.Error("the write queue's goroutine ran on a slow link")
	}
}

// TestFINWaitsForTheQueue: a FIN frame's write returns only once the
// frames queued before it and the FIN itself are written: a stream's
// Close then means its bytes have left this process.
func TestFINWaitsForTheQueue(t *testing.T) {
	c, peer := queueConn(t)
	fin := []byte{0, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0} // window update with FIN, stream 1
	var mu sync.Mutex
	var got []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, err := peer.Read(buf)
			mu.Lock()
			got = append(got, buf[:n]...)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	writeAll(t, c, window, dataHdr, dataBody) // queued
	writeAll(t, c, fin)
	mu.Lock()
	read := append([]byte(nil), got...)
	mu.Unlock()
	// The peer records a read before it reads again, and the FIN's own
	// write ends with a read: what came before it is recorded by now.
	if want := bytes.Join([][]byte{window, dataHdr, dataBody}, nil); !bytes.HasPrefix(read, want) {
		t.Errorf("when the FIN's write returned the peer had read %x, want at least %x", read, want)
	}
	_ = c.Close()
	_ = peer.Close()
	<-done
}

// bareConn is a TCP connection seen under other addresses that says with
// BareTCP that it buffers nothing (transport.ProxiedConn, after a load
// balancer's PROXY header).
type bareConn struct{ *net.TCPConn }

func (b bareConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 4711}
}
func (b bareConn) BareTCP() *net.TCPConn { return b.TCPConn }

// TestConnWritevThroughBareTCP: a session over a connection that came
// through a load balancer keeps the writev path and the socket options,
// as one over the bare *net.TCPConn; a wrapper that does not say it is
// bare gets neither.
func TestConnWritevThroughBareTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tc := d.(*net.TCPConn)
	c := newConn(bareConn{tc}, newBook(false, 0))
	if c.tcp != tc || rawTCP(bareConn{tc}) == nil {
		t.Errorf("over a bare wrapper: tcp %p, raw %v; want the socket %p and its raw conn", c.tcp, rawTCP(bareConn{tc}), tc)
	}
	type hidden struct{ net.Conn }
	if o := newConn(hidden{tc}, newBook(false, 0)); o.tcp != nil || rawTCP(hidden{tc}) != nil {
		t.Errorf("over a plain wrapper: tcp %p; want none", o.tcp)
	}
}
