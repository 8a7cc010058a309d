// Package mux turns one net.Conn into one yamux session and enforces the
// stream-role rule of the gotunnel-mux protocol: the first stream the client
// opens is the control stream, and the client opens no other. Every other
// stream is a data stream opened by the server.
//
// The client side:
//
//	sess, err := mux.Client(conn, mux.Options{Logger: log})
//	ctl, err := sess.OpenControl()   // once
//	for { st, err := sess.Accept(); ... } // data streams from the server
//
// The server side:
//
//	sess, err := mux.Server(conn, mux.Options{Logger: log})
//	ctl, err := sess.AcceptControl(ctx) // the first client-opened stream
//	st, err := sess.Open()              // a data stream per visitor
//
// Streams are net.Conns. Their Read reports ErrSessionClosed, not io.EOF,
// when the session died under them, so that a relay can tell a truncated
// transfer from a complete one. The package knows nothing of the control
// messages; it does not dial, listen or retry.
package mux
