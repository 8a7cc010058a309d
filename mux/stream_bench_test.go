package mux

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkStreamOpen opens a data stream, sends one byte, reads it on the
// client, and closes both ends: the per-visitor cost of the mux.
func BenchmarkStreamOpen(b *testing.B) {
	cli, srv := pair(b, Options{})
	ctl, _ := cli.OpenControl()
	_, _ = ctl.Write([]byte("x"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := srv.AcceptControl(ctx); err != nil {
		b.Fatal(err)
	}
	srv.Trust() // as a login does: an untrusted peer may send only UntrustedBytes
	one := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		st, err := srv.Open()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Write(one); err != nil {
			b.Fatal(err)
		}
		cs, err := cli.Accept()
		if err != nil {
			b.Fatalf("%v (session: %v)", err, context.Cause(cli.Context()))
		}
		if _, err := io.ReadFull(cs, one); err != nil {
			b.Fatal(err)
		}
		_ = cs.Close()
		_ = st.Close()
		if _, err := cs.Read(one); err != io.EOF {
			b.Fatalf("read after close = %v", err)
		}
	}
}
