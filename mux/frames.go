package mux

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
)

// ErrUntrusted ends a server session whose peer sent more than
// UntrustedBytes before Trust was called: a connection that has not logged
// in holds at most that much of the server's memory.
var ErrUntrusted = errors.New("mux: peer sent too much before it was trusted")

// UntrustedBytes is how many bytes a server session reads from its peer
// before Trust. A login (the yamux frames that open the control stream and
// carry one frame of at most 64 KiB) fits many times over.
const UntrustedBytes = 128 << 10

// yamux frame header fields (yamux spec.md).
const (
	yamuxFlagSYN = 1 << 0
	yamuxFlagFIN = 1 << 2
	yamuxFlagRST = 1 << 3

	yamuxTypeWindowUpdate = 1
)

// frameScanner follows the frame boundaries of the bytes yamux reads, so
// that the session sees each inbound frame header before yamux acts on it.
// It is owned by the connection's only reader, yamux's receive loop.
type frameScanner struct {
	hdr  [yamuxHeaderLen]byte
	n    int    // header bytes held
	body uint32 // body bytes of the current data frame not yet passed
	id   uint32 // the stream the current body belongs to
}

// scan walks p; for each complete header it calls onHeader, and for each
// run of body bytes onBody. An error from onHeader stops the scan.
func (s *frameScanner) scan(p []byte, onHeader func(h []byte) error, onBody func(id uint32, n int)) error {
	for len(p) > 0 {
		if s.body > 0 {
			k := min(uint32(len(p)), s.body)
			s.body -= k
			p = p[k:]
			onBody(s.id, int(k))
			continue
		}
		k := copy(s.hdr[s.n:], p)
		s.n += k
		p = p[k:]
		if s.n < yamuxHeaderLen {
			return nil
		}
		s.n = 0
		if s.hdr[1] == yamuxTypeData {
			s.body = binary.BigEndian.Uint32(s.hdr[8:])
			s.id = binary.BigEndian.Uint32(s.hdr[4:])
		}
		if err := onHeader(s.hdr[:]); err != nil {
			return err
		}
	}
	return nil
}

// streamEnd is what the session knows of one stream's end from the frames
// it read, shared by the stream and the session's book.
type streamEnd struct {
	fin     atomic.Bool  // the peer's FIN arrived
	finMark atomic.Int64 // control stream bytes that had arrived by then
}

// book keeps, per stream, what the frame headers say about its end, and
// counts what an untrusted peer has sent. Headers are noted by the
// connection's reader; streams look themselves up.
type book struct {
	server   bool // the peer is the client: its opens are counted
	maxOpens int  // peer-opened streams allowed once trusted, control included

	// owned by the connection's reader
	ctlID  uint32 // the control stream's ID; 0 until known
	ctlIn  int64  // control stream body bytes that have arrived
	read   int64  // bytes read in all, counted until trusted
	opens  int    // streams the peer opened
	failed error  // the first limit the peer broke; every later read fails

	trusted atomic.Bool

	mu   sync.Mutex // guards ends
	ends map[uint32]*bookEntry
}

type bookEntry struct {
	end    *streamEnd
	closed bool // closed on this side
}

func newBook(server bool, maxStray int) *book {
	b := &book{server: server, maxOpens: 1 + maxStray + 1, ends: make(map[uint32]*bookEntry)}
	if !server {
		b.ctlID = 1 // a yamux client's first stream: the control stream
		b.trusted.Store(true)
	}
	return b
}

// noteRead is called with every chunk read from the connection, before
// yamux sees it. An error fails the read: yamux then ends the session.
func (b *book) noteRead(s *frameScanner, p []byte) error {
	if b.failed != nil {
		return b.failed
	}
	if !b.trusted.Load() {
		if b.read += int64(len(p)); b.read > UntrustedBytes {
			b.failed = ErrUntrusted
			return b.failed
		}
	}
	b.failed = s.scan(p, b.header, b.body)
	return b.failed
}

func (b *book) body(id uint32, n int) {
	if id == b.ctlID {
		b.ctlIn += int64(n)
	}
}

// header notes one inbound frame header.
func (b *book) header(h []byte) error {
	if h[1] != yamuxTypeData && h[1] != yamuxTypeWindowUpdate {
		return nil
	}
	flags := binary.BigEndian.Uint16(h[2:])
	id := binary.BigEndian.Uint32(h[4:])
	if flags&yamuxFlagSYN != 0 && b.server {
		if err := b.opened(id); err != nil {
			return err
		}
	}
	switch {
	case flags&yamuxFlagRST != 0:
		b.forget(id)
	case flags&yamuxFlagFIN != 0:
		b.finArrived(id)
	}
	return nil
}

// opened counts a stream the client opened: the first is the control
// stream; before Trust no other is allowed, after it a burst past the
// stray limit ends the session before yamux buffers the streams' data.
func (b *book) opened(id uint32) error {
	b.opens++
	if b.opens == 1 {
		b.ctlID = id
	}
	limit := b.maxOpens
	if !b.trusted.Load() {
		limit = 1
	}
	if b.opens > limit {
		return ErrStrayStreams
	}
	return nil
}

// entry returns id's entry, making it when new. b.mu is held.
func (b *book) entryLocked(id uint32) *bookEntry {
	e := b.ends[id]
	if e == nil {
		e = &bookEntry{end: &streamEnd{}}
		b.ends[id] = e
	}
	return e
}

// end is the shared end record of stream id, for its Stream.
func (b *book) end(id uint32) *streamEnd {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entryLocked(id).end
}

func (b *book) finArrived(id uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entryLocked(id)
	e.end.finMark.Store(b.ctlIn)
	e.end.fin.Store(true)
	if e.closed {
		delete(b.ends, id)
	}
}

// closedHere notes that this side closed stream id; the entry goes once
// both ends are closed, as yamux's own stream does.
func (b *book) closedHere(id uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entryLocked(id)
	e.closed = true
	if e.end.fin.Load() {
		delete(b.ends, id)
	}
}

func (b *book) forget(id uint32) {
	b.mu.Lock()
	delete(b.ends, id)
	b.mu.Unlock()
}

// size is how many streams the book holds, for tests.
func (b *book) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.ends)
}
