package mux

import (
	"io"
	"net"
	"testing"
)

// BenchmarkServerWrites streams 32 KiB writes from the server to the
// client over loopback TCP, with the server's connection bare (a
// *net.TCPConn, as the one-port entry hands it over) and wrapped (any
// other net.Conn, as the entry's replay of a sniffed byte was). Both go
// through the connection's write queue (conn.go) the same way now; the
// rows show that a wrapper costs nothing more. The direct row is the same
// bytes on a plain TCP connection, for the ratio.
func BenchmarkServerWrites(b *testing.B) {
	buf := make([]byte, 32<<10)
	b.Run("direct", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"bare", func(c net.Conn) net.Conn { return c }},
		{"wrapped", func(c net.Conn) net.Conn { return struct{ net.Conn }{c} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cli, srv := pairWrapped(b, Options{}, tc.wrap)
			st, err := srv.Open()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := st.Write(buf[:1]); err != nil {
				b.Fatal(err)
			}
			cs, err := cli.Accept()
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = io.Copy(io.Discard, cs)
			}()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := st.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			_ = st.Close()
			<-done
		})
	}
}
