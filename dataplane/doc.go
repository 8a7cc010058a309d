// Package dataplane moves visitors' bytes: it serves a public listener per
// mapping, hands each visitor connection to a handler, and relays bytes
// between two connections with half-close preserved.
//
// On the server, a mapping's port is served with Serve; the handler (from
// package control/server) opens a data stream and calls Relay:
//
//	l := dataplane.Serve(ln, func(ctx context.Context, visitor net.Conn) {
//		stream := open(ctx) // a net.Conn
//		res := dataplane.Relay(ctx, visitor, stream)
//		log.Debug("visitor done", "bytes_in", res.AToB, "bytes_out", res.BToA)
//	}, dataplane.Options{MaxConns: 100})
//	defer l.Close()
//
// It uses the standard library and golang.org/x/time/rate only: streams
// are plain net.Conns here. It does not know the control protocol, dial
// the server or retry anything.
package dataplane
