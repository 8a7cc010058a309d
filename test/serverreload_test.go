package test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServerReload: SIGHUP makes the server re-read its file. Narrowing
// allow_ports closes the mapping whose port left it (1003, logged on both
// sides, its port refuses) while the other mapping and its live visitor
// go on; a bad file changes nothing and is logged with file, line and
// key; a new token ends the session that logged in with the old one
// (1002: the client stops with exit 3).
func TestServerReload(t *testing.T) {
	leakCheck(t)
	const token = "server-reload-token-0123456789"
	file := writeFile(t, "server.toml", "")
	write := func(tok, ports string) {
		t.Helper()
		err := os.WriteFile(file, []byte(fmt.Sprintf("bind_addr = \"127.0.0.1:0\"\ntoken = %q\npublic_addr = \"127.0.0.1\"\nallow_ports = [%s]\n[log]\nformat = \"json\"\n", tok, ports)), 0o600)
		if err != nil {
			t.Fatal(err)
		}
	}
	write(token, `"20000-40000"`)
	srv := startProc(t, nil, "server", "--config", file)
	addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)

	be := startBackend(t, echo)
	cli := startProc(t, nil, "client", "--config", writeFile(t, "client.toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = "narrowed"
[log]
format = "json"
[[mappings]]
name = "keep"
local_addr = %q
health_check = false
[[mappings]]
name = "drop"
local_addr = %q
health_check = false
`, addr, token, be.addr, be.addr)))
	up := func(name string) func(map[string]any) bool {
		return func(m map[string]any) bool {
			msg, _ := m["msg"].(string)
			return m["mapping"] == name && strings.HasPrefix(msg, name+"  tcp://")
		}
	}
	lines := waitLogs(t, cli, map[string]func(map[string]any) bool{"keep": up("keep"), "drop": up("drop")})
	keep, drop := int(lines["keep"]["remote_port"].(float64)), int(lines["drop"]["remote_port"].(float64))
	live := dialPort(t, keep)
	echoOnce(t, live, "before")

	// allow_ports narrowed to keep's port alone.
	write(token, strconv.Quote(strconv.Itoa(keep)))
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	closed := waitLogs(t, srv, map[string]func(map[string]any) bool{
		"closed":   func(m map[string]any) bool { return m["msg"] == "mapping closed: its port is no longer allowed" },
		"reloaded": msgIs("reloaded"),
	})["closed"]
	if closed["mapping"] != "drop" || closed["code"] != 1003.0 {
		t.Errorf("server line = %v, want mapping drop with code 1003", closed)
	}
	refused := cli.waitLog(t, "the client told", func(m map[string]any) bool { return m["msg"] == "mapping refused" && m["mapping"] == "drop" })
	if refused["code"] != 1003.0 || !strings.Contains(fmt.Sprint(refused["reason"]), "allow_ports") {
		t.Errorf("client line = %v, want code 1003 naming allow_ports", refused)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(drop)), time.Second); err == nil {
		_ = c.Close()
		t.Errorf("port %d still accepts after allow_ports left it out", drop)
	}
	echoOnce(t, live, "during") // the other mapping's visitor goes on
	if err := echoRoundTrip(keep, 3, 1<<20); err != nil {
		t.Errorf("a new visitor of the allowed mapping: %v", err)
	}

	// A bad file: nothing changes.
	if err := os.WriteFile(file, []byte("bind_addr = \"127.0.0.1:0\"\ntoken = \"x\"\nallow_port = [\"1-2\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	bad := srv.waitLog(t, "reload refused", msgIs("reload refused; nothing changed"))
	if e := fmt.Sprint(bad["err"]); !strings.Contains(e, "server.toml:3") || !strings.Contains(e, "allow_port") {
		t.Errorf("bad reload logged %q, want the file's line 3 and the key", e)
	}
	echoOnce(t, live, "after a bad file")

	// A new token: the session of the old one ends with 1002.
	write("a-brand-new-token-9876543210", strconv.Quote(strconv.Itoa(keep)))
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog(t, "token session ended", msgIs("client session ended: its token is no longer valid"))
	if code := cli.exitCode(t, 15*time.Second); code != 3 {
		t.Errorf("client exit after the token changed = %d, want 3", code)
	}
	if !strings.Contains(cli.output(), "1002") {
		t.Error("the client did not log code 1002")
	}
	_ = live.Close()
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("server exit = %d", code)
	}
	if strings.Contains(srv.output(), token) || strings.Contains(srv.output(), "a-brand-new-token") {
		t.Error("the server logged a token")
	}
}
