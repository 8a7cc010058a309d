package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUsageAndVersion(t *testing.T) {
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{nil, exitUsage, "Usage:"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"help"}, exitOK, "gotunnel-mux server --config"},
		{[]string{"version"}, exitOK, "gotunnel-mux dev"},
		{[]string{"token", "extra"}, exitUsage, "usage: gotunnel-mux token"},
		{[]string{"server"}, exitUsage, "usage: gotunnel-mux server --config"},
		{[]string{"server", "--nope"}, exitUsage, "flag provided but not defined"},
		{[]string{"check"}, exitUsage, "usage: gotunnel-mux check"},
		{[]string{"check", "--config", "/nonexistent/x.toml"}, exitUsage, "no such file"},
		{[]string{"client", "extra"}, exitUsage, ""},
		{[]string{"client", "--map", "nonsense"}, exitUsage, "--map"},
		{[]string{"client", "--map", "dns=5353:127.0.0.1:53/udp,proxy=v1"}, exitUsage,
			`--map: "dns=5353:127.0.0.1:53/udp,proxy=v1": proxy=v1: version 1 has no UDP form`},
		{[]string{"demo", "--log-level", "loud"}, exitUsage, "log level"},
		{[]string{"client", "--help"}, exitOK, "usage: gotunnel-mux client [--config client.toml]\n"},
		{[]string{"client", "--help"}, exitOK, "\n\nflags:\n  -config string"},
		{[]string{"server", "-h"}, exitOK, "usage: gotunnel-mux server --config server.toml\n\nflags:\n"},
		{[]string{"check", "--help"}, exitOK, "usage: gotunnel-mux check --config FILE"},
		{[]string{"demo", "--help"}, exitOK, "usage: gotunnel-mux demo"},
		{[]string{"demo", "extra"}, exitUsage, "usage: gotunnel-mux demo"},
	}
	for _, tc := range cases {
		code, out, errOut := runCmd(tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.out) {
			t.Errorf("run(%q) = %d, %q; want %d and %q", tc.args, code, out+errOut, tc.code, tc.out)
		}
	}
}

// TestClientBadMapSaysItOnce: a bad --map is one line, the value quoted
// once, without the usage after it; nothing starts (exit 2).
func TestClientBadMapSaysItOnce(t *testing.T) {
	code, out, errOut := runCmd("client", "--server", "h:1", "--token", "t", "--map", "ssh=10022:127.0.0.1:22", "--map", "web=0:[::1]:80,bandwidth=fast")
	want := `--map: "web=0:[::1]:80,bandwidth=fast": bandwidth=fast: bad size "fast": want a whole number of bytes, optionally followed by B, KB, MB, GB, KiB, MiB or GiB` + "\n"
	if code != exitUsage || out != "" || errOut != want {
		t.Errorf("client with a bad --map = %d, %q, %q; want 2 and only\n%s", code, out, errOut, want)
	}
}

// TestClientWithoutFile: a client started where there is no client.toml
// says how to start it, with a file or without one.
func TestClientWithoutFile(t *testing.T) {
	t.Chdir(t.TempDir())
	code, _, errOut := runCmd("client")
	if code != exitUsage || !strings.Contains(errOut, "client.toml: cannot read") ||
		!strings.Contains(errOut, "--config /path/to/client.toml") || !strings.Contains(errOut, "--server HOST:PORT --token TOKEN --map") {
		t.Errorf("client with no ./client.toml = %d, %q; want 2 and how to start", code, errOut)
	}
	// A file named on purpose gets no such advice.
	code, _, errOut = runCmd("client", "--config", "missing.toml")
	if code != exitUsage || strings.Contains(errOut, "--server HOST:PORT") {
		t.Errorf("client --config missing.toml = %d, %q", code, errOut)
	}
}

func TestToken(t *testing.T) {
	_, a, _ := runCmd("token")
	_, b, _ := runCmd("token")
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	raw, err := base64.RawURLEncoding.DecodeString(a)
	if err != nil || len(raw) != tokenBytes {
		t.Errorf("token %q: %d bytes, %v; want %d random bytes, base64url", a, len(raw), err, tokenBytes)
	}
	if a == b {
		t.Error("two tokens are equal")
	}
}

func TestCheck(t *testing.T) {
	good := writeFile(t, "server.toml", "bind_addr = \"127.0.0.1:7000\"\ntoken = \"abc\"\n")
	client := writeFile(t, "client.toml", "server_addr = \"h:7000\"\ntoken = \"abc\"\n[[mappings]]\nlocal_addr = \"127.0.0.1:22\"\nremote_port = 2222\n")
	bad := writeFile(t, "bad.toml", "bind_addr = \"127.0.0.1:7000\"\ntoken = \"abc\"\nallow_ports = [\"10-x\"]\n")
	neither := writeFile(t, "neither.toml", "token = \"abc\"\n")
	badTLS := writeFile(t, "tls.toml", "bind_addr = \"127.0.0.1:7000\"\ntoken = \"abc\"\n[tls]\ncert_file = \"/nonexistent.crt\"\nkey_file = \"/nonexistent.key\"\n")
	badCA := writeFile(t, "ca.toml", "server_addr = \"h:7000\"\ntoken = \"abc\"\n[tls]\nca_file = \"/nonexistent-ca.pem\"\n")
	cases := []struct {
		path string
		code int
		out  string
	}{
		{good, exitOK, "ok (server configuration)"},
		{client, exitOK, "ok (client configuration)"},
		{bad, exitUsage, "bad.toml:3"},
		{neither, exitUsage, "neither.toml"},
		{badTLS, exitUsage, "nonexistent.crt"},
		{badCA, exitUsage, "nonexistent-ca.pem"},
	}
	for _, tc := range cases {
		code, out, errOut := runCmd("check", "--config", tc.path)
		if code != tc.code || !strings.Contains(out+errOut, tc.out) {
			t.Errorf("check %s = %d, %q; want %d and %q", filepath.Base(tc.path), code, out+errOut, tc.code, tc.out)
		}
	}
	if code, _, _ := runCmd("check", good); code != exitOK {
		t.Errorf("check FILE as an argument = %d", code)
	}
}

// TestCheckSummary: under "ok", check says what a good file sets up: a
// client's mappings with their protocol, lists, limits and PROXY header;
// a server's ports, limits, visitor lists and who logs in. No token is
// shown.
func TestCheckSummary(t *testing.T) {
	t.Setenv("GOTUNNEL_TOKEN", "")
	tests := []struct {
		name, file, want string
	}{
		{"client", `server_addr = "tunnel.example.com:7000"
token = "s3cret-client-token"
name = "office-pc"
[tls]
[[mappings]]
name = "ssh"
local_addr = "127.0.0.1:22"
remote_port = 10022
allow_ips = ["203.0.113.0/24", "2001:db8::/32"]
deny_ips = ["203.0.113.9"]
bandwidth_limit = "10MiB"
proxy_protocol = "v2"
[[mappings]]
local_addr = "127.0.0.1:53"
remote_port = 5353
protocol = "udp"
[[mappings]]
name = "web"
local_addr = "[::1]:8080"
health_check = false
allow_ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
`, `client.toml: ok (client configuration)
  server_addr tunnel.example.com:7000 (tls), name office-pc
  ssh     tcp  10022  -> 127.0.0.1:22  proxy_protocol v2; allow_ips 203.0.113.0/24, 2001:db8::/32; deny_ips 203.0.113.9/32; bandwidth_limit 10MiB/s
  udp-53  udp  5353   -> 127.0.0.1:53  udp_idle_timeout 1m0s
  web     tcp  any    -> [::1]:8080    health_check false; allow_ips 10.0.0.1/32, 10.0.0.2/32, 10.0.0.3/32, 10.0.0.4/32 (and 2 more)
`},
		{"client without mappings", "server_addr = \"ws://h:80/tunnel\"\ntoken = \"s3cret-client-token\"\nname = \"idle\"\n", `client.toml: ok (client configuration)
  server_addr ws://h:80/tunnel (ws), name idle
  no mappings: the client will connect but expose nothing
`},
		{"client of two servers", "server_addrs = [\"tls://a.example.com:443\", \"wss://b.example.com:443/t\"]\nha = \"all\"\ntoken = \"s3cret-client-token\"\nname = \"twice\"\n" +
			"[[mappings]]\nlocal_addr = \"127.0.0.1:22\"\n", `client.toml: ok (client configuration)
  server_addrs tls://a.example.com:443 (tls), wss://b.example.com:443/t (wss), ha all, name twice
  tcp-22  tcp  any  -> 127.0.0.1:22
`},
		{"server", `bind_addr = "0.0.0.0:7000"
token = "s3cret-server-token"
allow_ports = ["10000-20000", "2222"]
max_conns_per_mapping = 8
max_bandwidth_per_client = "50MiB"
allow_ips = ["198.51.100.0/24"]
deny_ips = ["198.51.100.7"]
trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]
accept_proxy_protocol = "all"
[[clients]]
name = "laptop"
token = "s3cret-laptop-token"
allow_ports = ["10000-10100"]
max_mappings = 4
[[clients]]
name = "nas"
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000001"
`, `server.toml: ok (server configuration)
  bind_addr 0.0.0.0:7000 (plain), public_addr 0.0.0.0, allow_ports 10000-20000, 2222
  max_mappings_per_client 16; max_conns_per_mapping 8; max_udp_flows_per_mapping 1024; max_bandwidth_per_client 50MiB/s
  visitors: allow_ips 198.51.100.0/24; deny_ips 198.51.100.7/32
  accept_proxy_protocol all, from trusted_proxies 10.0.0.0/8, 192.0.2.1/32
  token: shared, for any name without a [[clients]] entry
  client laptop: own token; allow_ports 10000-10100; max_mappings 4
  client nas: own token
`},
		{"server of defaults", "bind_addr = \"127.0.0.1:7000\"\n[[clients]]\nname = \"solo\"\ntoken = \"s3cret-solo-token\"\n", `server.toml: ok (server configuration)
  bind_addr 127.0.0.1:7000 (plain), public_addr 0.0.0.0, allow_ports 1024-65535
  max_mappings_per_client 16; max_conns_per_mapping none; max_udp_flows_per_mapping 1024; max_bandwidth_per_client none
  visitors: allow_ips any; deny_ips none
  token: none; only the [[clients]] log in
  client solo: own token
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			name := strings.Fields(tt.want)[0]
			name = strings.TrimSuffix(name, ":")
			if err := os.WriteFile(name, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runCmd("check", name)
			if code != exitOK || out != tt.want || errOut != "" {
				t.Errorf("check %s = %d, stderr %q, stdout\n%s\nwant\n%s", name, code, errOut, out, tt.want)
			}
			if strings.Contains(out, "s3cret") {
				t.Errorf("check printed a token:\n%s", out)
			}
		})
	}
}

func TestConfigErrorsExit2(t *testing.T) {
	srvBad := writeFile(t, "s.toml", "bind_addr = \"127.0.0.1:0\"\ntoken = \"abc\"\nlogin_timout = \"5s\"\n")
	srvTLS := writeFile(t, "t.toml", "bind_addr = \"127.0.0.1:0\"\ntoken = \"abc\"\n[tls]\ncert_file = \"a\"\nkey_file = \"b\"\n")
	cliNoToken := writeFile(t, "c.toml", "server_addr = \"h:1\"\n")
	cases := [][]string{
		{"server", "--config", srvBad},
		{"server", "--config", srvTLS},
		{"client", "--config", cliNoToken},
		{"client", "--config", filepath.Join(t.TempDir(), "missing.toml")},
		{"client", "--server", "h:1", "--map", "0:127.0.0.1:22"}, // no token
	}
	t.Setenv("GOTUNNEL_TOKEN", "")
	os.Unsetenv("GOTUNNEL_TOKEN")
	for _, args := range cases {
		if code, _, e := runCmd(args...); code != exitUsage {
			t.Errorf("run(%q) = %d, %q; want 2", args, code, e)
		}
	}
}

func TestServerCannotListenExit1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := writeFile(t, "s.toml", fmt.Sprintf("bind_addr = %q\ntoken = \"abc\"\n[log]\nformat = \"json\"\n", ln.Addr()))
	if code, _, e := runCmd("server", "--config", cfg); code != exitFailure || !strings.Contains(e, "cannot listen") {
		t.Errorf("server on a taken port = %d, %q; want 1 and 'cannot listen'", code, e)
	}
}

// logPipe is an io.Writer whose JSON lines can be waited for.
type logPipe struct {
	r  *io.PipeReader
	w  *io.PipeWriter
	ch chan map[string]any
	wg sync.WaitGroup
}

func newLogPipe() *logPipe {
	r, w := io.Pipe()
	p := &logPipe{r: r, w: w, ch: make(chan map[string]any, 256)}
	p.wg.Go(func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.ch <- m:
				default:
				}
			}
		}
	})
	return p
}

func (p *logPipe) close() { _ = p.w.Close(); p.wg.Wait() }

func (p *logPipe) wait(t *testing.T, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m := <-p.ch:
			if match(m) {
				return m
			}
		case <-timeout:
			t.Fatal("log line not seen within 15s")
		}
	}
}

// TestServerAndClientInProcess runs both commands in this process, sends a
// visitor through, then SIGTERM (delivered to both commands' handlers).
func TestServerAndClientInProcess(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	var bwg sync.WaitGroup
	defer bwg.Wait()
	bwg.Go(func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			_, _ = io.Copy(c, c)
			_ = c.Close()
		}
	})
	srvLog, cliLog := newLogPipe(), newLogPipe()
	defer srvLog.close()
	defer cliLog.close()
	srvCfg := writeFile(t, "s.toml", "bind_addr = \"127.0.0.1:0\"\ntoken = \"in-process\"\npublic_addr = \"127.0.0.1\"\nshutdown_timeout = \"2s\"\n[log]\nformat = \"json\"\n")
	codes := make(chan [2]int, 2)
	go func() { codes <- [2]int{0, run([]string{"server", "--config", srvCfg}, io.Discard, srvLog.w)} }()
	short := srvLog.wait(t, func(m map[string]any) bool {
		msg, _ := m["msg"].(string)
		return strings.HasPrefix(msg, "the token is short")
	})
	if short["level"] != "WARN" || short["length"] != float64(len("in-process")) {
		t.Errorf("short token line = %v, want a warning with its length", short)
	}
	addr := srvLog.wait(t, func(m map[string]any) bool { return m["msg"] == "server listening" })["addr"].(string)

	t.Setenv("GOTUNNEL_TOKEN", "in-process")
	go func() {
		codes <- [2]int{1, run([]string{"client", "--server", addr, "--map", "echo=0:" + backend.Addr().String()}, io.Discard, cliLog.w)}
	}()
	// Quick mode logs text; the server's JSON says when the mapping is up.
	up := srvLog.wait(t, func(m map[string]any) bool { return m["msg"] == "mapping up" })
	port := int(up["remote_port"].(float64))
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("hello"))
	_ = c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hello" {
		t.Errorf("echo through the in-process tunnel = %q", got)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case c := <-codes:
			if c[1] != exitOK {
				t.Errorf("command %d exited %d after SIGTERM, want 0", c[0], c[1])
			}
		case <-time.After(15 * time.Second):
			t.Fatal("commands did not stop within 15s of SIGTERM")
		}
	}
	_ = backend.Close()
}

func TestDemo(t *testing.T) {
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run([]string{"demo"}, pw, io.Discard)
		_ = pw.Close()
	}()
	urlRE := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`)
	sc := bufio.NewScanner(pr)
	var url string
	for url == "" && sc.Scan() {
		url = urlRE.FindString(sc.Text())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }() // the rest of the banner
	if url == "" {
		t.Fatal("demo printed no URL")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "It works.") {
		t.Errorf("demo page = %q", body)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
	select {
	case c := <-code:
		if c != exitOK {
			t.Errorf("demo exited %d after SIGINT, want 0", c)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("demo did not stop within 15s of SIGINT")
	}
}
