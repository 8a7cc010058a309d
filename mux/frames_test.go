package mux

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// controlPair opens the control stream and returns both of its ends, with
// the server side trusted (logged in).
func controlPair(t *testing.T, opts Options) (cli, srv *Session, cctl, sctl *Stream) {
	t.Helper()
	cli, srv = pair(t, opts)
	cctl, err := cli.OpenControl()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cctl.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	sctl = acceptControl(t, srv)
	if _, err := io.ReadFull(sctl, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	srv.Trust()
	return cli, srv, cctl, sctl
}

// readCtl reads want from st, the marker that proves every frame sent
// before it has been handled by the reading side's yamux.
func readCtl(t *testing.T, st *Stream, want string) {
	t.Helper()
	buf := make([]byte, len(want))
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != want {
		t.Fatalf("control read %q, %v; want %q", buf, err, want)
	}
	_ = st.SetReadDeadline(time.Time{})
}

// TestFinBeforeSessionDeathIsEOF pins issue 9, defect 1: a stream whose FIN
// arrived before the session died reads every byte and then io.EOF; only
// a stream whose FIN had not arrived reads ErrSessionClosed. Before the
// fix, both read ErrSessionClosed, and the relay reset a finished download.
func TestFinBeforeSessionDeathIsEOF(t *testing.T) {
	cli, srv, cctl, sctl := controlPair(t, Options{})
	done, _ := srv.Open()
	open, _ := srv.Open()
	body := bytes.Repeat([]byte("0123456789abcdef"), 12<<10) // 192 KiB, within the window
	if _, err := done.Write(body); err != nil {
		t.Fatal(err)
	}
	_ = done.CloseWrite()
	if _, err := open.Write(body[:1000]); err != nil {
		t.Fatal(err)
	}
	if _, err := sctl.Write([]byte("m")); err != nil {
		t.Fatal(err)
	}
	cdone, err := cli.Accept()
	if err != nil {
		t.Fatal(err)
	}
	copen, err := cli.Accept()
	if err != nil {
		t.Fatal(err)
	}
	readCtl(t, cctl, "m") // the marker came after the FIN: the FIN has arrived
	_ = srv.Close()
	<-cli.Done()

	got, err := io.ReadAll(cdone)
	if err != nil || !bytes.Equal(got, body) {
		t.Errorf("finished stream: read %d bytes, err %v; want %d bytes and io.EOF", len(got), err, len(body))
	}
	got, err = io.ReadAll(copen)
	if !errors.Is(err, ErrSessionClosed) || len(got) != 1000 {
		t.Errorf("unfinished stream: read %d bytes, err %v; want 1000 and ErrSessionClosed", len(got), err)
	}
}

// TestFinMark: a stream's FIN carries the count of control bytes that had
// arrived before it, so a reader can tell which control frames the peer
// wrote before closing the stream.
func TestFinMark(t *testing.T) {
	cli, srv, cctl, sctl := controlPair(t, Options{})
	var want int64
	for i, n := range []int{10, 5} {
		ds, _ := srv.Open()
		_, _ = ds.Write([]byte("d"))
		_, _ = sctl.Write(make([]byte, n))
		_ = ds.CloseWrite()
		cs, err := cli.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(cs); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		want += int64(n) // the control bytes the server wrote so far
		mark, ok := cs.FinMark()
		if !ok || mark != want {
			t.Errorf("stream %d FinMark = %d, %v; want %d, true", i, mark, ok, want)
		}
		_ = cs.Close()
		if _, err := io.ReadFull(cctl, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		if got := cctl.Consumed(); got != want {
			t.Errorf("Consumed = %d, want %d", got, want)
		}
	}
	if _, ok := sctl.FinMark(); ok {
		t.Error("control stream has a FinMark before its FIN")
	}
}

// TestBookForgetsClosedStreams: once both ends of a stream are closed its
// entry goes, as yamux's own stream does; a long session holds nothing
// per finished stream.
func TestBookForgetsClosedStreams(t *testing.T) {
	cli, srv, _, _ := controlPair(t, Options{})
	for range 50 {
		ds, _ := srv.Open()
		_, _ = ds.Write([]byte("a"))
		cs, err := cli.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_ = cs.Close()
		_ = ds.Close()
		_, _ = io.ReadAll(cs)
		_, _ = io.ReadAll(ds)
	}
	deadline := time.Now().Add(5 * time.Second)
	for cli.book.size() > 1 || srv.book.size() > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("book sizes %d, %d after 50 closed streams; want 1 (control)", cli.book.size(), srv.book.size())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestUntrustedPeerIsBounded: before Trust a server session ends as soon
// as its peer opens a second stream or sends more than UntrustedBytes; the
// offending data is never buffered.
func TestUntrustedPeerIsBounded(t *testing.T) {
	t.Run("stray stream", func(t *testing.T) {
		cli, srv := pair(t, Options{})
		ctl, _ := cli.OpenControl()
		_, _ = ctl.Write([]byte("x"))
		if st, err := cli.ys.OpenStream(); err == nil { // the server may have cut the session already
			_, _ = st.Write(make([]byte, 200<<10))
		}
		waitCause(t, srv, ErrStrayStreams)
	})
	t.Run("too many bytes", func(t *testing.T) {
		cli, srv := pair(t, Options{})
		ctl, _ := cli.OpenControl()
		go func() { _, _ = ctl.Write(make([]byte, UntrustedBytes+1)) }()
		waitCause(t, srv, ErrUntrusted)
	})
	t.Run("burst after trust", func(t *testing.T) {
		cli, srv, _, _ := controlPair(t, Options{MaxStrayStreams: 2})
		for range 4 {
			st, err := cli.ys.OpenStream()
			if err != nil {
				break
			}
			_, _ = st.Write([]byte("x"))
		}
		waitCause(t, srv, ErrStrayStreams)
	})
}

func waitCause(t *testing.T, s *Session, want error) {
	t.Helper()
	select {
	case <-s.Context().Done():
		if cause := context.Cause(s.Context()); !errors.Is(cause, want) {
			t.Errorf("cause = %v, want %v", cause, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("session still up; want it ended with %v", want)
	}
}

// TestFrameScanner: headers split across reads and bodies skipped by
// length; only data frames have a body.
func TestFrameScanner(t *testing.T) {
	data := []byte{0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4} // data, stream 3, 4 bytes
	fin := []byte{0, 1, 0, 4, 0, 0, 0, 3, 0, 0, 0, 0}  // window update, FIN, stream 3
	ping := []byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9} // ping: the length is an opaque value
	wire := append(append(append(append([]byte(nil), data...), "body"...), ping...), fin...)
	for _, step := range []int{1, 3, 7, len(wire)} {
		var s frameScanner
		var hdrs [][]byte
		bodies := 0
		for p := wire; len(p) > 0; {
			k := min(step, len(p))
			err := s.scan(p[:k], func(h []byte) error {
				hdrs = append(hdrs, append([]byte(nil), h...))
				return nil
			}, func(id uint32, n int) { bodies += n })
			if err != nil {
				t.Fatal(err)
			}
			p = p[k:]
		}
		if len(hdrs) != 3 || !bytes.Equal(hdrs[0], data) || !bytes.Equal(hdrs[1], ping) || !bytes.Equal(hdrs[2], fin) || bodies != 4 {
			t.Errorf("step %d: headers %x, body bytes %d", step, hdrs, bodies)
		}
	}
}

// TestBookFollowsHeaders: a FIN marks the stream's end, a close on both
// sides forgets it, and a reset (yamux RST) forgets it at once.
func TestBookFollowsHeaders(t *testing.T) {
	b := newBook(false, 0)
	hdr := func(flags byte, id byte) []byte { return []byte{0, 1, 0, flags, 0, 0, 0, id, 0, 0, 0, 0} }
	end := b.end(5)
	if err := b.header(hdr(yamuxFlagFIN, 5)); err != nil || !end.fin.Load() {
		t.Fatalf("FIN header: %v, fin %v", err, end.fin.Load())
	}
	b.closedHere(5)
	b.end(7)
	if err := b.header(hdr(yamuxFlagRST, 7)); err != nil {
		t.Fatal(err)
	}
	if n := b.size(); n != 0 {
		t.Errorf("book holds %d streams after a closed and a reset one, want 0", n)
	}
}
