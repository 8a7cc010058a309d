package mux

import (
	"io"
	"net"

	"github.com/hashicorp/yamux"
)

// Stream is one yamux stream. Close is a half-close (it sends FIN and
// forbids further writes; reads go on until the peer closes), so CloseWrite
// is the same call; yamux cannot send a reset.
type Stream struct {
	*yamux.Stream
	sess *Session
}

var _ net.Conn = (*Stream)(nil)

// Read reads from the stream. At the peer's close it returns io.EOF; when
// the session died instead, it returns ErrSessionClosed.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if err == io.EOF && s.sess.IsClosed() {
		return n, ErrSessionClosed
	}
	return n, err
}

// CloseWrite sends FIN: the peer reads io.EOF after the data already sent.
func (s *Stream) CloseWrite() error { return s.Stream.Close() }

// Session is the session the stream belongs to.
func (s *Stream) Session() *Session { return s.sess }

// WaitRead waits until the stream has data to read, or has ended, without
// taking any buffer: a relay waits here while the stream is idle. The
// stream's end is left for the next Read to report; WaitRead returns nil.
func (s *Stream) WaitRead() error {
	_, _ = s.Stream.Read(nil)
	return nil
}
