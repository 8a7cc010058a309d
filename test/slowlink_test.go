package test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// endless writes the deterministic byte sequence of seed to w until a
// write fails.
func endless(w io.Writer, seed uint64) {
	src := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, 16<<10)
	for {
		_, _ = src.Read(buf)
		if _, err := w.Write(buf); err != nil {
			return
		}
	}
}

var errMismatch = errors.New("bytes differ from what was sent")

// verifier checks that what it is given continues seed's sequence.
type verifier struct {
	src  *rand.ChaCha8
	want []byte
	n    int64
}

func newVerifier(seed uint64) *verifier {
	return &verifier{src: rand.NewChaCha8([32]byte{byte(seed)})}
}

func (v *verifier) Write(p []byte) (int, error) {
	if cap(v.want) < len(p) {
		v.want = make([]byte, len(p))
	}
	want := v.want[:len(p)]
	_, _ = v.src.Read(want)
	if !bytes.Equal(p, want) {
		return 0, fmt.Errorf("%w after %d good bytes", errMismatch, v.n)
	}
	v.n += int64(len(p))
	return len(p), nil
}

// TestSlowSaturatedUplink: eight bulk downloads saturate a 128 KB/s uplink
// between client and server for 60 s (yamux's own keepalive kills such a
// session after about 40 s). With the default heartbeat settings the
// session must stay up, the bytes must stay intact, and a small request on
// another visitor connection must still get through. One of the downloads
// comes after a half-close, so it also proves a half-closed stream lives
// past yamux's old 30 s StreamCloseTimeout.
func TestSlowSaturatedUplink(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute")
	}
	leakCheck(t)
	const seed, bulks, uplink = 9, 8, 128_000
	duration := 60 * time.Second
	bulk := startBackend(t, func(c net.Conn) { endless(c, seed) })
	be := startBackend(t, echo)
	srv := startServer(t, server.Options{})
	px := startFaultProxy(t, srv.addr)
	px.uplinkBps.Store(uplink)
	cl := startClientOpts(t, client.Options{ServerAddr: px.addr, Name: "slow", Mappings: []client.Mapping{
		{Name: "bulk", LocalAddr: bulk.addr}, {Name: "echo", LocalAddr: be.addr}}})
	ports := cl.waitUp(t, "bulk", "echo")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	got := make([]int64, bulks)
	for i := range bulks {
		v := dialPort(t, ports["bulk"])
		if i == 0 {
			_ = v.CloseWrite() // a half-closed visitor: the answer must flow all minute
		}
		wg.Go(func() {
			ver := newVerifier(seed)
			go func() { <-stop; v.Close() }()
			_, err := io.Copy(ver, v)
			select {
			case <-stop:
			default:
				t.Errorf("bulk download %d ended early after %d bytes: %v", i, ver.n, err)
			}
			if errors.Is(err, errMismatch) {
				t.Errorf("bulk download %d: %v", i, err)
			}
			got[i] = ver.n
		})
	}

	time.Sleep(duration / 2) // let the uplink saturate: this test is about time passing
	start := time.Now()
	if err := echoRoundTrip(ports["echo"], 1, 200); err != nil {
		t.Errorf("small request during the saturation: %v", err)
	}
	t.Logf("small request through the saturated uplink took %s", time.Since(start).Round(time.Millisecond))
	time.Sleep(duration/2 - time.Since(start))

	if n := countEvents(cl.events, client.EventSessionDown); n != 0 {
		t.Errorf("the session went down %d times under a slow, saturated uplink", n)
	}
	close(stop)
	wg.Wait()
	var total int64
	for _, n := range got {
		total += n
	}
	t.Logf("%d bulk downloads moved %d KB in %s (%.0f KB/s of a %d KB/s uplink); smallest %d KB",
		bulks, total/1000, duration, float64(total)/1000/duration.Seconds(), uplink/1000, minOf(got)/1000)
	if minOf(got) == 0 {
		t.Error("a bulk download got nothing")
	}
}

func minOf(xs []int64) int64 {
	m := xs[0]
	for _, x := range xs {
		m = min(m, x)
	}
	return m
}
