package dataplane

import (
	"context"
	"io"
	"net"
	"testing"
)

// BenchmarkRelay moves data through one relay (two loopback TCP hops) and,
// in the same run, straight through one TCP connection, so that the ratio
// is the relay's cost:
//
//	go test -run '^$' -bench Relay ./dataplane/
func BenchmarkRelay(b *testing.B) {
	const chunk = 64 << 10
	run := func(b *testing.B, w, r net.Conn) {
		buf := make([]byte, chunk)
		done := make(chan error, 1)
		go func() {
			_, err := io.CopyN(io.Discard, r, int64(b.N)*chunk)
			done <- err
		}()
		b.SetBytes(chunk)
		b.ResetTimer()
		for range b.N {
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.Run("direct", func(b *testing.B) {
		w, r := tcpPair(b)
		run(b, w, r)
	})
	b.Run("relay", func(b *testing.B) {
		w, a := tcpPair(b)
		c, r := tcpPair(b)
		go Relay(context.Background(), a, c)
		run(b, w, r)
		_ = w.Close()
		_ = r.Close()
	})
	// The visitor end as it is behind a load balancer: a connection under
	// a PROXY header's address, which must keep the fast path.
	b.Run("relay-proxied", func(b *testing.B) {
		w, a := tcpPair(b)
		c, r := tcpPair(b)
		go Relay(context.Background(), &named{TCPConn: a, remote: headerAddr("203.0.113.9:4711")}, c)
		run(b, w, r)
		_ = w.Close()
		_ = r.Close()
	})
}
