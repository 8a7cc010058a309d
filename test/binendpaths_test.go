package test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// The end paths of issue 9 with the real binaries, as users run them.

// clientBinary starts the client binary against addr with JSON debug logs
// and the given mappings ([[mappings]] tables) and extra top-level keys;
// addr "" leaves server_addr out (extra gives server_addrs).
func clientBinary(t *testing.T, addr, extra, mappings string) *proc {
	t.Helper()
	if addr != "" {
		addr = fmt.Sprintf("server_addr = %q", addr)
	}
	cfg := writeFile(t, "client.toml", fmt.Sprintf(`
%s
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
	be := requestBackend(t, 31, size)
	srv := startServer(t, server.Options{})
	cli := clientBinary(t, srv.addr, "", mappingToml("dl", be.addr, 0))
	d := request(t, upPort(t, cli, "dl"), 1<<20)
	cli.waitLog(t, "the client's relay done", func(m map[string]any) bool {
		return m["msg"] == "visitor closed" && m["bytes_out"] == float64(size) && m["err"] == nil
	})
	_ = cli.cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	d.wait(t, 30*time.Second, size, sumOf(31, size))
	t.Logf("the visitor's download ended intact %s after the client was killed", d.at.Sub(killed).Round(time.Millisecond))
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
		echoThenReset(t, port)
		took := servedWithin(t, port, time.Second)
		t.Logf("round %d: the next visitor was served %s after the reset", i, took.Round(time.Millisecond))
	}
	if strings.Contains(srv.output(), "panic") {
		t.Error("the server logged a panic")
	}
}

// uploadUntilReset connects a visitor to port that uploads 5 MB, and
// returns how long it lived until it was reset.
func uploadUntilReset(t *testing.T, port int, seed uint64) time.Duration {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if errors.Is(err, syscall.ECONNRESET) {
		return 0 // reset before connect returned: refused at once
	}
	if err != nil {
		t.Fatal(err)
	}
	v := c.(*net.TCPConn)
	defer v.Close()
	wrote := make(chan error, 1)
	go func() {
		_ = v.SetWriteDeadline(time.Now().Add(20 * time.Second))
		_, err := stream(v, seed, 5_000_000)
		wrote <- err
	}()
	start := time.Now()
	_ = v.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, rerr := v.Read(make([]byte, 1))
	took := time.Since(start)
	werr := <-wrote
	// The kernel reports a reset to one call: the read or the write.
	if !errors.Is(rerr, syscall.ECONNRESET) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Errorf("visitor: read %v, upload %v; want a reset", rerr, werr)
	}
	return took
}

// TestBinaryRefusedUploadHoldsNothing: a 5 MB upload into a mapping whose
// local dial hangs until dial_timeout (1s), with max_conns_per_mapping = 1.
// The visitor is reset when the client gives up, and its place is free
// again within a second: the next visitor is admitted (it waits for the
// client's dial in turn) rather than reset at once as one over the limit.
func TestBinaryRefusedUploadHoldsNothing(t *testing.T) {
	leakCheck(t)
	hang := hangingAddr(t)
	_, addr := serverBinary(t, "", "max_conns_per_mapping = 1")
	cli := clientBinary(t, addr, `dial_timeout = "1s"`, mappingToml("hang", hang, 0))
	port := upPort(t, cli, "hang")
	if took := uploadUntilReset(t, port, 0); took < 800*time.Millisecond {
		t.Fatalf("the first visitor was reset after %s, before dial_timeout", took)
	}
	for round := range 2 {
		freed := time.Now()
		for {
			if took := uploadUntilReset(t, port, uint64(round+1)); took >= 800*time.Millisecond {
				break // admitted: it waited for the client's dial_timeout
			}
			if time.Since(freed) > time.Second {
				t.Fatalf("round %d: every visitor refused for 1s after the last one was reset: its place was held", round)
			}
		}
		t.Logf("round %d: the next visitor was admitted about %s after the previous reset", round,
			(time.Since(freed) - time.Second).Round(time.Millisecond))
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
	srv := startServer(t, server.Options{})
	cli := clientBinary(t, srv.addr, `shutdown_timeout = "30s"`, mappingToml("big", be.addr, 0))
	port := upPort(t, cli, "big")
	v := dialPort(t, port)
	_ = v.SetReadBuffer(64 << 10)
	d := startDownload(v, rate)
	if err := pollFor(20*time.Second, func() bool { return d.pr.count.Load() >= size/10 }); err != nil {
		t.Fatal("the transfer did not get going")
	}
	sigterm := time.Now()
	_ = cli.cmd.Process.Signal(syscall.SIGTERM)
	cli.waitLog(t, "stopping", func(m map[string]any) bool { return strings.HasPrefix(m["msg"].(string), "stopping") })
	// New visitors are turned away (reset) while the download goes on.
	if err := pollFor(5*time.Second, func() bool { return echoRoundTrip(port, 9, 16) != nil }); err != nil {
		t.Error("a new visitor was still served 5s after SIGTERM to the client")
	}
	d.drainedBy(t, cli, sigterm, size, sumOf(41, size))
}
