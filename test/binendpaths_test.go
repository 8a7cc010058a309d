package test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
)

// The end paths of issue 9 with the real binaries, as users run them.

// clientBinary starts the client binary against addr with JSON debug logs
// and the given mappings ([[mappings]] tables) and extra top-level keys.
func clientBinary(t *testing.T, addr, extra, mappings string) *proc {
	t.Helper()
	cfg := writeFile(t, "client.toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = "bin"
heartbeat_interval = "200ms"
heartbeat_timeout = "3s"
%s
[reconnect]
min = "50ms"
max = "500ms"
[log]
level = "debug"
format = "json"
%s
`, addr, testToken, extra, mappings))
	return startProc(t, nil, "client", "--config", cfg)
}

func mappingToml(name, local string, port int) string {
	return fmt.Sprintf("[[mappings]]\nname = %q\nlocal_addr = %q\nremote_port = %d\nhealth_check = false\n", name, local, port)
}

func upPort(t *testing.T, p *proc, name string) int {
	t.Helper()
	return int(p.waitLog(t, "mapping "+name+" up", mappingLine(name))["remote_port"].(float64))
}

// TestBinaryKill9AfterFinishedDownload: a slow visitor (1 MiB/s) downloads
// 6 MiB; once the client has relayed the whole answer, the client is
// killed with SIGKILL. The visitor still gets every byte and a clean end.
func TestBinaryKill9AfterFinishedDownload(t *testing.T) {
	leakCheck(t)
	const size = 6 << 20
	sums := make(chan [32]byte, 1)
	be := startBackend(t, func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c) // the request, to its half-close
		sum, _ := stream(c, 31, size)
		sums <- sum
	})
	srv := startServer(t, control.ServerOptions{})
	cli := clientBinary(t, srv.addr, "", mappingToml("dl", be.addr, 0))
	v := dialSmallWindow(t, upPort(t, cli, "dl"))
	defer v.Close()
	if _, err := v.Write([]byte("GET /dump.sql")); err != nil {
		t.Fatal(err)
	}
	_ = v.CloseWrite()
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		n, sum, err := slowDrain(v, 1<<20)
		got <- result{n, sum, err}
	}()
	cli.waitLog(t, "the client's relay done", func(m map[string]any) bool {
		return m["msg"] == "visitor closed" && m["bytes_out"] == float64(size) && m["err"] == nil
	})
	_ = cli.cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	want := <-sums
	select {
	case r := <-got:
		if r.err != nil || r.n != size || r.sum != want {
			t.Fatalf("visitor got %d of %d bytes (sum match %v), end %v; want all and a clean EOF", r.n, size, r.sum == want, r.err)
		}
		t.Logf("the visitor's download ended intact %s after the client was killed", time.Since(killed).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("the download did not end within 30s of the kill")
	}
}

// servedWithin dials port until a visitor is served (an echo round trip)
// rather than reset at once, and returns how long that took.
func servedWithin(t *testing.T, port int, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := echoRoundTrip(port, 5, 4<<10)
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("no visitor served within %s: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBinaryVisitorResetFreesPlace: with max_conns_per_mapping = 1, a
// visitor that resets its connection frees the place for the next one
// within a second, three times in a row.
func TestBinaryVisitorResetFreesPlace(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	srv, addr := serverBinary(t, "", "max_conns_per_mapping = 1")
	cli := clientBinary(t, addr, "", mappingToml("e", be.addr, 0))
	port := upPort(t, cli, "e")
	for i := range 3 {
		v := dialPort(t, port)
		if _, err := v.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(v, make([]byte, 2)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		_ = v.SetLinger(0)
		v.Close()
		took := servedWithin(t, port, time.Second)
		t.Logf("round %d: the next visitor was served %s after the reset", i, took.Round(time.Millisecond))
	}
	if strings.Contains(srv.output(), "panic") {
		t.Error("the server logged a panic")
	}
}

// TestBinaryRefusedUploadHoldsNothing: a 5 MB upload into a mapping whose
// local dial hangs until dial_timeout; the visitor is reset when the
// client gives up, and nothing stays held: the server logs the visitor's
// end at once and the next visitor gets the one place.
func TestBinaryRefusedUploadHoldsNothing(t *testing.T) {
	leakCheck(t)
	hang := hangingAddr(t)
	srv, addr := serverBinary(t, "", "max_conns_per_mapping = 1")
	cli := clientBinary(t, addr, `dial_timeout = "1s"`, mappingToml("hang", hang, 0))
	port := upPort(t, cli, "hang")
	for i := range 2 {
		v := dialPort(t, port)
		wrote := make(chan error, 1)
		go func() {
			_ = v.SetWriteDeadline(time.Now().Add(20 * time.Second))
			_, err := stream(v, uint64(i), 5_000_000)
			wrote <- err
		}()
		start := time.Now()
		_ = v.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, rerr := v.Read(make([]byte, 1))
		took := time.Since(start)
		werr := <-wrote
		v.Close()
		if !errors.Is(rerr, syscall.ECONNRESET) && !errors.Is(werr, syscall.ECONNRESET) {
			t.Errorf("visitor %d: read %v, upload %v; want a reset", i, rerr, werr)
		}
		// Refused for max_conns it would be reset at once; its place was
		// free, so it waited for the client's dial_timeout.
		if took < 800*time.Millisecond {
			t.Errorf("visitor %d reset after %s, before dial_timeout: its place was still held", i, took)
		}
		srv.waitLog(t, "the visitor's end", func(m map[string]any) bool {
			return m["msg"] == "visitor closed" && m["code"] == float64(control.CodeLocalUnreachable)
		})
		t.Logf("visitor %d: reset %s after it connected, end logged by the server", i, took.Round(time.Millisecond))
	}
	if strings.Contains(srv.output(), "max_conns_per_mapping reached") {
		t.Error("a visitor was refused for max_conns_per_mapping: a refused upload held its place")
	}
}

// TestBinaryZeroPortKeptAfterServerRestart: a remote_port = 0 mapping
// comes back on the same port after the server is killed and restarted.
func TestBinaryZeroPortKeptAfterServerRestart(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	srv, addr := serverBinary(t, "", "")
	cli := clientBinary(t, addr, "", mappingToml("any", be.addr, 0))
	port := upPort(t, cli, "any")
	for round := range 2 {
		_ = srv.cmd.Process.Signal(syscall.SIGKILL)
		_ = srv.exitCode(t, 5*time.Second)
		srv, _ = serverBinary(t, addr, "")
		if got := upPort(t, cli, "any"); got != port {
			t.Fatalf("restart %d: the mapping came back on %d, want %d", round, got, port)
		}
		if err := echoRoundTrip(port, uint64(round), 64<<10); err != nil {
			t.Fatalf("restart %d: %v", round, err)
		}
	}
}

// TestBinaryClientSIGTERMDrainsDownload: SIGTERM to the client during a
// 256 MiB download: the download finishes intact, new visitors are
// refused at once meanwhile, and the client exits 0 after the transfer.
func TestBinaryClientSIGTERMDrainsDownload(t *testing.T) {
	leakCheck(t)
	const size, rate = 256 << 20, 48 << 20
	be := startBackend(t, func(c net.Conn) {
		_, _ = stream(c, 41, size)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	srv := startServer(t, control.ServerOptions{})
	cli := clientBinary(t, srv.addr, `shutdown_timeout = "30s"`, mappingToml("big", be.addr, 0))
	port := upPort(t, cli, "big")
	v := dialPort(t, port)
	defer v.Close()
	_ = v.SetReadBuffer(64 << 10)
	want, _ := stream(discard{}, 41, size)
	var got struct {
		n   int64
		sum [32]byte
		err error
	}
	var wg sync.WaitGroup
	readDone := make(chan time.Time, 1)
	pr := &pacedReader{r: v, rate: rate, start: time.Now()}
	wg.Go(func() {
		got.n, got.sum, got.err = drain(pr)
		readDone <- time.Now()
		v.Close()
	})
	if err := pollFor(20*time.Second, func() bool { return pr.count.Load() >= size/10 }); err != nil {
		t.Fatal("the transfer did not get going")
	}
	sigterm := time.Now()
	_ = cli.cmd.Process.Signal(syscall.SIGTERM)
	cli.waitLog(t, "stopping", func(m map[string]any) bool { return strings.HasPrefix(m["msg"].(string), "stopping") })
	// New visitors are turned away (reset) while the download goes on.
	if err := pollFor(5*time.Second, func() bool { return echoRoundTrip(port, 9, 16) != nil }); err != nil {
		t.Error("a new visitor was still served 5s after SIGTERM to the client")
	}
	code := cli.exitCode(t, 40*time.Second)
	exited := time.Now()
	wg.Wait()
	done := <-readDone
	if code != 0 {
		t.Errorf("client exit code %d, want 0", code)
	}
	if got.err != nil || got.n != size || got.sum != want {
		t.Fatalf("visitor got %d of %d bytes (sum match %v, err %v)", got.n, size, got.sum == want, got.err)
	}
	if done.After(exited) {
		t.Errorf("client exited %s before the transfer finished", done.Sub(exited))
	}
	t.Logf("SIGTERM at %d MiB of %d; transfer finished %s later; client exited %s after SIGTERM",
		size/10>>20, size>>20, done.Sub(sigterm).Round(time.Millisecond), exited.Sub(sigterm).Round(time.Millisecond))
}
