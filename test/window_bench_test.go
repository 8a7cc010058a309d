package test

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// BenchmarkWindow measures one visitor connection's upload throughput
// through the tunnel for several yamux window sizes, on plain loopback and
// with 10 ms added each way between client and server (20 ms RTT): the
// figures behind the default [mux] window_size (docs/performance.md).
//
//	go test -run '^$' -bench Window -benchtime 64x ./test/
func BenchmarkWindow(b *testing.B) {
	for _, rtt := range []time.Duration{0, 20 * time.Millisecond} {
		for _, w := range []uint32{256 << 10, 1 << 20, 4 << 20, 16 << 20} {
			b.Run(fmt.Sprintf("rtt=%s/window=%dKiB", rtt, w>>10), func(b *testing.B) {
				benchWindow(b, rtt, w)
			})
		}
	}
}

func benchWindow(b *testing.B, rtt time.Duration, window uint32) {
	sink := startBackend(b, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	srv := startServer(b, server.Options{Mux: mux.Options{WindowSize: window}})
	px := startFaultProxy(b, srv.addr)
	px.latency.Store(int64(rtt / 2))
	cl := startClientOpts(b, client.Options{ServerAddr: px.addr, Name: "bench",
		Mappings: []client.Mapping{{Name: "sink", LocalAddr: sink.addr}}, Mux: mux.Options{WindowSize: window}})
	port := cl.waitUp(b, "sink")["sink"]
	v := dialPort(b, port)
	defer v.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := v.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = v.CloseWrite()
	// Wait until the sink has read everything: the visitor's reads end
	// when the relay half-closes back after the sink's EOF.
	_, _ = io.Copy(io.Discard, v)
	b.StopTimer()
}
