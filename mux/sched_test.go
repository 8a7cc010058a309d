package mux

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// slowLink is a server connection that writes at about rate bytes per
// second and records, for each write, the stream of the data frame it
// carries (0: not a data frame) and its length. mux joins a data frame's
// header and body into one write on a connection that is not TCP, so one
// write is one frame.
type slowLink struct {
	net.Conn
	rate float64

	mu     sync.Mutex
	frames []sent
}

type sent struct {
	id uint32
	n  int
}

func (l *slowLink) Write(p []byte) (int, error) {
	var id uint32
	if len(p) > yamuxHeaderLen && p[1] == yamuxTypeData {
		id = binary.BigEndian.Uint32(p[4:])
	}
	time.Sleep(time.Duration(float64(len(p)) / l.rate * float64(time.Second)))
	n, err := l.Conn.Write(p)
	l.mu.Lock()
	l.frames = append(l.frames, sent{id, n})
	l.mu.Unlock()
	return n, err
}

func (l *slowLink) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.frames)
}

func (l *slowLink) since(i int) []sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sent(nil), l.frames[i:]...)
}

// bulkWriters opens n streams from the server and writes 32 KiB at a time
// on each until stop; the client side discards what arrives.
func bulkWriters(t *testing.T, cli, srv *Session, n int) (ids []uint32, stop func()) {
	t.Helper()
	var wg sync.WaitGroup
	done := make(chan struct{})
	buf := make([]byte, 32<<10)
	for range n {
		st := openPair(t, cli, srv, &wg)
		ids = append(ids, st.StreamID())
		wg.Go(func() {
			for {
				select {
				case <-done:
					_ = st.Close()
					return
				default:
				}
				if _, err := st.Write(buf); err != nil {
					return
				}
			}
		})
	}
	return ids, func() {
		close(done)
		_ = cli.Close()
		_ = srv.Close()
		wg.Wait()
	}
}

// openPair opens a stream from the server, accepts it on the client and
// discards what it reads there (in wg).
func openPair(t *testing.T, cli, srv *Session, wg *sync.WaitGroup) *Stream {
	t.Helper()
	st, err := srv.Open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stream.Write([]byte{0}); err != nil { // past the scheduler: the open itself
		t.Fatal(err)
	}
	cs, err := cli.Accept()
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _, _ = io.Copy(io.Discard, cs) })
	return st
}

func slowPair(t *testing.T, rate float64) (cli, srv *Session, link *slowLink) {
	t.Helper()
	cli, srv = pairWrapped(t, Options{}, func(c net.Conn) net.Conn {
		link = &slowLink{Conn: c, rate: rate}
		return link
	})
	srv.Trust()
	return cli, srv, link
}

// waitFrames waits until the link has carried n frames.
func waitFrames(t *testing.T, link *slowLink, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for link.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the link carried %d frames in 10 s, want %d", link.count(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQuietWriteGoesAhead: with eight streams writing bulk over a slow
// link, one byte on a quiet stream reaches the connection behind at most
// the frames that hold the bulk slots, not one frame of every bulk stream
// (yamux's FIFO alone: eight).
func TestQuietWriteGoesAhead(t *testing.T) {
	cli, srv, link := slowPair(t, 8<<20)
	var wg sync.WaitGroup
	quiet := openPair(t, cli, srv, &wg)
	_, stop := bulkWriters(t, cli, srv, 8)
	defer func() { stop(); wg.Wait() }()
	for round := range 5 {
		waitFrames(t, link, link.count()+16) // a backlog: every bulk writer is waiting
		from := link.count()
		if _, err := quiet.Write([]byte{byte(round)}); err != nil {
			t.Fatal(err)
		}
		ahead := 0
		for _, f := range link.since(from) {
			if f.id == quiet.StreamID() {
				break
			}
			if f.id != 0 {
				ahead++
			}
		}
		if ahead > bulkSlots+1 {
			t.Errorf("round %d: %d bulk frames went out between the keystroke and its frame, want at most %d", round, ahead, bulkSlots+1)
		}
	}
}

// TestBulkStreamsTakeTurns: four bulk streams share the link in turn:
// over 200 frames each has its fair share within a tenth.
func TestBulkStreamsTakeTurns(t *testing.T) {
	cli, srv, link := slowPair(t, 64<<20)
	ids, stop := bulkWriters(t, cli, srv, 4)
	defer stop()
	waitFrames(t, link, 40)
	from := link.count()
	waitFrames(t, link, from+200)
	bytes := map[uint32]int{}
	total := 0
	for _, f := range link.since(from)[:200] {
		if f.id != 0 {
			bytes[f.id] += f.n
			total += f.n
		}
	}
	for _, id := range ids {
		share := float64(bytes[id]) / float64(total) * float64(len(ids))
		if share < 0.9 || share > 1.1 {
			t.Errorf("stream %d moved %.2f of its fair share (%v)", id, share, bytes)
		}
	}
}

// TestStalledStreamsDoNotStopOthers: two streams whose reader never
// reads fill their flow-control window and stall inside yamux, holding
// both bulk slots; with the connection still, their slots are given back
// (lend), and a third stream's transfer goes through.
func TestStalledStreamsDoNotStopOthers(t *testing.T) {
	cli, srv := pair(t, Options{WindowSize: 256 << 10})
	srv.Trust()
	srv.sched.link = nil // bulkSlots on any link: on loopback nothing would wait
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() { _ = cli.Close(); _ = srv.Close() }()
	big := make([]byte, 1<<20)
	for range 2 {
		st, err := srv.Open()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Stream.Write([]byte{0}); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Accept(); err != nil { // accepted, never read
			t.Fatal(err)
		}
		wg.Go(func() { _, _ = st.Write(big) }) // it stalls at 256 KiB
	}
	var ok sync.WaitGroup
	live := openPair(t, cli, srv, &ok)
	done := make(chan error, 1)
	go func() {
		_, err := live.Write(make([]byte, 4<<20))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a live stream's 4 MiB did not go through beside two stalled streams")
	}
	_ = cli.Close()
	_ = srv.Close()
	ok.Wait()
}

// TestWaitingWriteEnds: a write waiting for a bulk slot fails at its
// write deadline, also one set while it waits (as an abort does), and at
// the session's close; slots go to waiters in the order they came.
func TestWaitingWriteEnds(t *testing.T) {
	cli, srv := pair(t, Options{})
	srv.Trust()
	var wg sync.WaitGroup
	st := openPair(t, cli, srv, &wg)
	sc := srv.sched
	sc.link = nil // bulkSlots on any link: on loopback nothing would wait
	for range bulkSlots {
		if err := sc.acquire(st); err != nil {
			t.Fatal(err)
		}
	}
	_ = st.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	if err := sc.acquire(st); !errors.Is(err, yamux.ErrTimeout) {
		t.Errorf("acquire past the deadline = %v, want ErrTimeout", err)
	}
	_ = st.SetWriteDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { errc <- sc.acquire(st) }()
	waitWaiters(t, sc, 1)
	_ = st.SetWriteDeadline(time.Now()) // an abort
	if err := <-errc; !errors.Is(err, yamux.ErrTimeout) {
		t.Errorf("acquire when the deadline moved to now = %v, want ErrTimeout", err)
	}
	_ = st.SetWriteDeadline(time.Time{})

	order := make(chan int, 2)
	for i := range 2 {
		waitWaiters(t, sc, i)
		go func() {
			if sc.acquire(st) == nil {
				order <- i
			}
		}()
		waitWaiters(t, sc, i+1)
	}
	for want := range 2 {
		sc.release()
		if got := <-order; got != want {
			t.Errorf("slot %d went to waiter %d, want %d", want, got, want)
		}
	}
	go func() { errc <- sc.acquire(st) }()
	waitWaiters(t, sc, 1)
	_ = srv.Close()
	if err := <-errc; !errors.Is(err, yamux.ErrSessionShutdown) {
		t.Errorf("acquire at the session's close = %v, want ErrSessionShutdown", err)
	}
	_ = cli.Close()
	wg.Wait()
}

// waitWaiters waits until n writers wait for a slot (the ones that gave up
// are left out).
func waitWaiters(t *testing.T, sc *scheduler, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		sc.mu.Lock()
		k := 0
		for _, w := range sc.waiters {
			if !w.gone {
				k++
			}
		}
		sc.mu.Unlock()
		if k == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d writers wait for a slot, want %d", k, n)
		case <-time.After(time.Millisecond):
		}
	}
}

// TestLinkSizes pins the sizing rule: maxima on a fast link, small frames
// and budget on a slow one.
func TestLinkSizes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		rate          uint64
		max           int
		frame, unsent int
	}{
		{"loopback", 5 << 30, 128 << 10, maxFrame, 128 << 10},
		{"1 Gbit/s", 125e6, 128 << 10, maxFrame, 128 << 10},
		{"100 Mbit/s", 12.5e6, 128 << 10, 25000, 50000},
		{"20 Mbit/s", 2.5e6, 128 << 10, 5000, 10000},
		{"1 Mbit/s", 125e3, 128 << 10, minFrame, minUnsent},
		{"budget option below the minimum", 2.5e6, 2 << 10, 5000, 2 << 10},
	} {
		if frame, unsent := linkSizes(tc.rate, tc.max); frame != tc.frame || unsent != tc.unsent {
			t.Errorf("%s: linkSizes(%d) = frame %d, unsent %d; want %d, %d", tc.name, tc.rate, frame, unsent, tc.frame, tc.unsent)
		}
	}
}
