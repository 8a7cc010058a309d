package server

import (
	"errors"
	"net"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
)

// serveWebSocket logs in and runs a session that arrived over WebSocket;
// the entry calls it in the HTTP side's goroutine for the connection.
func (s *Server) serveWebSocket(a *transport.Arrival) {
	if !s.enter() {
		_ = a.Conn.Close()
		a.Release()
		return
	}
	defer s.wg.Done()
	sess, err := s.loginOver(a, nil)
	a.Release()
	if err != nil {
		return
	}
	_ = a.Raw.SetDeadline(time.Time{})
	sess.run()
}

// pausedRemote reports whether a client forwarded by a trusted proxy is
// paused for wrong tokens.
func (s *Server) pausedRemote(remote net.Addr) bool { return s.guard.isPaused(remote) }

// upgradeRefused logs an upgrade the entry refused on its own.
func (s *Server) upgradeRefused(remote net.Addr, err error) {
	if errors.Is(err, transport.ErrPlainWebSocket) {
		s.log.Warn("login refused: plain WebSocket on a TLS server", "remote", remote.String(), "code", int(control.CodeTLS))
		return
	}
	// Charged to the proxy's own address, this client's wrong tokens
	// would pause every client behind the proxy: it is refused, loudly.
	s.guard.noForwarded(remote, err)
}

// enter counts a goroutine Close must wait for, unless the server is
// closing.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.wg.Add(1)
	return true
}
