package test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
)

// serverBinary starts the server binary on 127.0.0.1 (port 0 unless addr
// is given) with JSON logs and returns it with the address it bound.
func serverBinary(t *testing.T, addr string, extra string) (*proc, string) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cfg := writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = %q
token = %q
public_addr = "127.0.0.1"
heartbeat_timeout = "2s"
heartbeat_check_interval = "200ms"
%s
[log]
level = "debug"
format = "json"
`, addr, testToken, extra))
	p := startProc(t, nil, "server", "--config", cfg)
	return p, p.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
}

// mappingLine matches the client's "NAME  tcp://HOST:PORT -> LOCAL" line
// (udp:// for a UDP mapping); "" matches any mapping's.
func mappingLine(name string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		msg, _ := m["msg"].(string)
		mapping, _ := m["mapping"].(string)
		return (name == "" || mapping == name) && mapping != "" &&
			(strings.HasPrefix(msg, mapping+"  tcp://") || strings.HasPrefix(msg, mapping+"  udp://"))
	}
}

// TestBinaryServerKilledAndRestarted: the server process is killed with
// SIGKILL and a new one starts on the same port, twice; the client process
// comes back by itself each time and the mapping works.
func TestBinaryServerKilledAndRestarted(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	srv, addr := serverBinary(t, "", "")
	cfg := writeFile(t, "client.toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = "survivor"
heartbeat_interval = "200ms"
heartbeat_timeout = "2s"
[reconnect]
min = "50ms"
max = "500ms"
[log]
format = "json"
[[mappings]]
name = "echo"
local_addr = %q
`, addr, testToken, be.addr))
	cli := startProc(t, nil, "client", "--config", cfg)
	for round := range 3 {
		port := int(cli.waitLog(t, "mapping echo up", mappingLine("echo"))["remote_port"].(float64))
		if err := echoRoundTrip(port, uint64(round), 256<<10); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if round == 2 {
			break
		}
		_ = srv.cmd.Process.Signal(syscall.SIGKILL)
		if code := srv.exitCode(t, 5*time.Second); code != -1 {
			t.Fatalf("killed server exit code %d, want -1 (signal)", code)
		}
		cli.waitLog(t, "disconnected", func(m map[string]any) bool { return m["msg"] == "disconnected" && m["code"] == float64(1001) })
		srv, _ = serverBinary(t, addr, "")
	}
	_ = cli.cmd.Process.Signal(syscall.SIGTERM)
	if code := cli.exitCode(t, 10*time.Second); code != 0 {
		t.Errorf("client exit code after SIGTERM = %d, want 0", code)
	}
}

// TestBinarySIGTERMDrainsLiveTransfer: SIGTERM while a visitor downloads
// 256 MiB at a pace far slower than the path: far more than any socket
// buffer holds is still to come. The transfer must finish intact, the
// port must refuse new visitors at once, and the server must exit 0 within
// shutdown_timeout, after the transfer.
func TestBinarySIGTERMDrainsLiveTransfer(t *testing.T) {
	leakCheck(t)
	const size, rate = 256 << 20, 48 << 20 // bytes, bytes per second
	be := startBackend(t, func(c net.Conn) {
		_, _ = stream(c, 21, size)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	srv, addr := serverBinary(t, "", `shutdown_timeout = "30s"`)
	cl := startClientOpts(t, fastClient(addr, "drain", client.Mapping{Name: "big", LocalAddr: be.addr}))
	port := cl.waitUp(t, "big")["big"]

	v := dialPort(t, port)
	_ = v.SetReadBuffer(64 << 10)
	d := startDownload(v, rate)
	// SIGTERM once a tenth has arrived.
	if err := pollFor(20*time.Second, func() bool { return d.pr.count.Load() >= size/10 }); err != nil {
		t.Fatal("the transfer did not get going")
	}
	sigterm := time.Now()
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.waitLog(t, "shutting down", func(m map[string]any) bool { return strings.HasPrefix(m["msg"].(string), "shutting down") })
	waitRefused(t, port, 2*time.Second)

	d.drainedBy(t, srv, sigterm, size, sumOf(21, size))
}

// pacedReader reads at most rate bytes per second on average.
type pacedReader struct {
	r     io.Reader
	rate  int64
	start time.Time
	n     int64
	count atomic.Int64 // n, for other goroutines
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if ahead := time.Duration(p.n*int64(time.Second)/p.rate) - time.Since(p.start); ahead > 0 {
		time.Sleep(ahead) // the pace of a slow visitor
	}
	n, err := p.r.Read(b[:min(len(b), 64<<10)])
	p.n += int64(n)
	p.count.Store(p.n)
	return n, err
}

// TestBinarySecondSignalStopsAtOnce: a live visitor holds the graceful
// stop; a second SIGTERM ends it at once.
func TestBinarySecondSignalStopsAtOnce(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, echo)
	srv, addr := serverBinary(t, "", `shutdown_timeout = "60s"`)
	cl := startClientOpts(t, fastClient(addr, "hold", client.Mapping{Name: "e", LocalAddr: be.addr}))
	v := dialPort(t, cl.waitUp(t, "e")["e"])
	defer v.Close()
	if _, err := v.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(v, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.waitLog(t, "shutting down", func(m map[string]any) bool { return strings.HasPrefix(m["msg"].(string), "shutting down") })
	start := time.Now()
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.exitCode(t, 5*time.Second); code != 0 {
		t.Errorf("exit code after a second SIGTERM = %d, want 0", code)
	}
	t.Logf("stopped %s after the second signal", time.Since(start).Round(time.Millisecond))
}

// TestBinaryTLS drives the binaries with real certificate files: a client
// with ca_file works, one with insecure_skip_verify works and warns, and a
// SIGHUP after the files were replaced serves the new certificate.
func TestBinaryTLS(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	ca1, ca2 := newCA(t, "first CA"), newCA(t, "second CA")
	certFile, keyFile := ca1.issue(t, "server", false, time.Time{}).files(t, dir, "server")
	ca1File, ca2File := writeFile(t, "ca1.pem", string(ca1.pem)), writeFile(t, "ca2.pem", string(ca2.pem))
	srv, addr := serverBinary(t, "", fmt.Sprintf("[tls]\ncert_file = %q\nkey_file = %q\n", certFile, keyFile))
	be := startBackend(t, echo)

	client := func(name, tlsTable string) *proc {
		cfg := writeFile(t, name+".toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = %q
[reconnect]
min = "50ms"
max = "200ms"
[log]
format = "json"
[tls]
%s
[[mappings]]
name = "e"
local_addr = %q
`, addr, testToken, name, tlsTable, be.addr))
		return startProc(t, nil, "client", "--config", cfg)
	}
	useMapping := func(p *proc, seed uint64) {
		t.Helper()
		port := int(p.waitLog(t, "mapping e up", mappingLine("e"))["remote_port"].(float64))
		if err := echoRoundTrip(port, seed, 256<<10); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.exitCode(t, 10*time.Second); code != 0 {
			t.Errorf("client exit code %d after SIGTERM", code)
		}
	}

	useMapping(client("verified", fmt.Sprintf("ca_file = %q", ca1File)), 1)

	insecure := client("insecure", "insecure_skip_verify = true")
	insecure.waitLog(t, "insecure warning", func(m map[string]any) bool {
		msg, _ := m["msg"].(string)
		return m["level"] == "WARN" && strings.Contains(msg, "NOT VERIFIED")
	})
	useMapping(insecure, 2)

	// Rotate: a certificate from the second CA, then SIGHUP.
	ca2.issue(t, "server", false, time.Time{}).files(t, dir, "server")
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog(t, "reloaded", func(m map[string]any) bool { return m["msg"] == "TLS certificate reloaded" })
	useMapping(client("rotated", fmt.Sprintf("ca_file = %q", ca2File)), 3)
}

// TestBinaryTransports drives the client binary with URL forms of
// server_addr and a proxy_url, against one server port.
func TestBinaryTransports(t *testing.T) {
	leakCheck(t)
	_, addr := serverBinary(t, "", "")
	be := startBackend(t, echo)
	px := startConnectProxy(t, "user", "pa55", false)
	for i, tc := range []struct{ name, serverAddr, extra string }{
		{"ws", "ws://" + addr + "/gotunnel", ""},
		{"tcp-url", "tcp://" + addr, ""},
		{"ws-proxied", "ws://" + addr, fmt.Sprintf("proxy_url = \"http://user:pa55@%s\"", px.addr)},
	} {
		cfg := writeFile(t, tc.name+".toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = %q
%s
[log]
format = "json"
[[mappings]]
name = "e"
local_addr = %q
`, tc.serverAddr, testToken, tc.name, tc.extra, be.addr))
		cli := startProc(t, nil, "client", "--config", cfg)
		port := int(cli.waitLog(t, "mapping e up", mappingLine("e"))["remote_port"].(float64))
		if err := echoRoundTrip(port, uint64(i), 256<<10); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if strings.Contains(cli.output(), "pa55") {
			t.Errorf("%s: the proxy password is in the log", tc.name)
		}
		_ = cli.cmd.Process.Signal(syscall.SIGTERM)
		if code := cli.exitCode(t, 10*time.Second); code != 0 {
			t.Errorf("%s: exit %d", tc.name, code)
		}
	}
	if px.tunnels.Load() < 1 {
		t.Error("the proxied client did not use the proxy")
	}
}
