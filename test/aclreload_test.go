package test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/cmd/gotunnel-mux/admin"
)

// More loopback visitors, beside those of visitoracl_test.go.
var visitorFour = netip.MustParseAddr("127.0.0.4")

// serverDoc and clientDoc read a running binary's status document.
func serverDoc(t *testing.T, base string) admin.ServerDoc {
	t.Helper()
	var doc admin.ServerDoc
	if code, body := httpGet(t, base+"/api/v1/status", ""); code != http.StatusOK || json.Unmarshal(body, &doc) != nil {
		t.Fatalf("server status = %d %s", code, body)
	}
	return doc
}

func clientDoc(t *testing.T, base string) admin.ClientDoc {
	t.Helper()
	var doc admin.ClientDoc
	if code, body := httpGet(t, base+"/api/v1/status", ""); code != http.StatusOK || json.Unmarshal(body, &doc) != nil {
		t.Fatalf("client status = %d %s", code, body)
	}
	return doc
}

// serverRow and clientRow are one mapping of a status document.
func serverRow(t *testing.T, doc admin.ServerDoc, client, mapping string) admin.MappingRow {
	t.Helper()
	for _, c := range doc.Clients {
		for _, m := range c.Mappings {
			if c.Name == client && m.Name == mapping {
				return m
			}
		}
	}
	t.Fatalf("no mapping %s of client %s in the server's status", mapping, client)
	return admin.MappingRow{}
}

func clientRow(t *testing.T, doc admin.ClientDoc, mapping string) admin.MappingRow {
	t.Helper()
	for _, m := range doc.Mappings {
		if m.Name == mapping {
			return m
		}
	}
	t.Fatalf("no mapping %s in the client's status", mapping)
	return admin.MappingRow{}
}

// upLineOf matches the client's "mapping up" line of name.
func upLineOf(name string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		msg, _ := m["msg"].(string)
		return m["mapping"] == name && strings.HasPrefix(msg, name+"  tcp://")
	}
}

// aclServer starts the server binary with an admin API on loopback and
// no visitor lists; it returns the process, its file, its address and
// its API.
func aclServer(t *testing.T, token string) (srv *proc, file, addr, api string) {
	t.Helper()
	file = writeFile(t, "server.toml", "")
	writeServerLists(t, file, token, "")
	srv = startProc(t, nil, "server", "--config", file)
	lines := waitLogs(t, srv, map[string]func(map[string]any) bool{"listening": msgIs("server listening"), "admin": msgIs("admin api listening")})
	return srv, file, lines["listening"]["addr"].(string), lines["admin"]["addr"].(string)
}

// writeServerLists writes the server's file with the given lists
// ("deny_ips = [...]" lines, or "").
func writeServerLists(t *testing.T, file, token, lists string) {
	t.Helper()
	content := fmt.Sprintf("bind_addr = \"127.0.0.1:0\"\ntoken = %q\npublic_addr = \"127.0.0.1\"\n%s\n[admin]\naddr = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n", token, lists)
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// stopBoth sends SIGTERM to the client, then the server, and wants exit 0
// of each.
func stopBoth(t *testing.T, cli, srv *proc) {
	t.Helper()
	_ = cli.cmd.Process.Signal(syscall.SIGTERM)
	if code := cli.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("client exit = %d", code)
	}
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("server exit = %d", code)
	}
}

// TestClientReloadVisitorLists: the client's SIGHUP puts a mapping's
// changed allow_ips and deny_ips in force for new visitors: one the old
// lists let in is now reset at the server's door, one they kept out now
// gets its bytes through, and deny_ips beats allow_ips; no denied
// visitor reaches the client (no data stream, no connection to the
// local service). A 64 MiB download through another mapping runs
// across the reload and arrives intact.
func TestClientReloadVisitorLists(t *testing.T) {
	leakCheck(t)
	const token = "acl-reload-token-0123456789"
	srv, _, addr, sAPI := aclServer(t, token)

	const size = 64 << 20
	sent := make(chan [32]byte, 1)
	big := startBackend(t, func(c net.Conn) {
		if sum, err := stream(c, 7, size); err == nil {
			sent <- sum
		}
		_ = c.(*net.TCPConn).CloseWrite()
	})
	be, conns := countingEcho(t)
	mappings := func(allow, deny string) string {
		return fmt.Sprintf("[[mappings]]\nname = \"big\"\nlocal_addr = %q\nhealth_check = false\n"+
			"[[mappings]]\nname = \"guard\"\nlocal_addr = %q\nhealth_check = false\nallow_ips = [%s]\ndeny_ips = [%s]\n", big.addr, be.addr, allow, deny)
	}
	head := fmt.Sprintf("server_addr = %q\ntoken = %q\nname = \"lists\"\n[admin]\naddr = \":0\"\n[log]\nformat = \"json\"\n", addr, token)
	file := writeFile(t, "client.toml", head+mappings(`"127.0.0.2"`, ""))
	cli := startProc(t, nil, "client", "--config", file)
	lines := waitLogs(t, cli, map[string]func(map[string]any) bool{
		"admin": msgIs("admin api listening"), "big": upLineOf("big"), "guard": upLineOf("guard"),
	})
	cAPI := lines["admin"]["addr"].(string)
	guard := int(lines["guard"]["remote_port"].(float64))

	// The download starts and pauses with most of it to come.
	dl := dialPort(t, int(lines["big"]["remote_port"].(float64)))
	h := sha256.New()
	if _, err := io.CopyN(h, dl, 4<<20); err != nil {
		t.Fatal(err)
	}

	// Before: only 127.0.0.2 gets in.
	resetFrom(t, visitorBanned, guard) // 127.0.0.3
	echoFrom(t, visitorIn, guard, 1, 256<<10)
	if n := conns.Load(); n != 1 {
		t.Fatalf("the local service got %d connections before the reload, want 1", n)
	}

	// SIGHUP: allow 127.0.0.3 and 127.0.0.4, deny 127.0.0.4.
	if err := os.WriteFile(file, []byte(head+mappings(`"127.0.0.3", "127.0.0.4"`, `"127.0.0.4"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = cli.cmd.Process.Signal(syscall.SIGHUP)
	got := waitLogs(t, cli, map[string]func(map[string]any) bool{"reloaded": msgIs("reloaded"), "guard": upLineOf("guard")})
	if r := got["reloaded"]; r["added"] != 0.0 || r["removed"] != 0.0 || r["changed"] != 1.0 {
		t.Errorf("reload line = %v, want only guard changed", r)
	}
	guard = int(got["guard"]["remote_port"].(float64))

	// After: 127.0.0.2 is no longer allowed, 127.0.0.4 is denied although
	// allowed, 127.0.0.3 gets in.
	resetFrom(t, visitorIn, guard)
	resetFrom(t, visitorFour, guard)
	echoFrom(t, visitorBanned, guard, 2, 256<<10)
	if n := conns.Load(); n != 2 {
		t.Errorf("the local service got %d connections, want 2 (the admitted visitors)", n)
	}
	if m := clientRow(t, clientDoc(t, cAPI), "guard"); m.Visitors != 2 {
		t.Errorf("the client served %d data streams of guard, want 2: a denied visitor opened one", m.Visitors)
	}
	if m := serverRow(t, serverDoc(t, sAPI), "lists", "guard"); m.Denied != 3 || m.Visitors != 2 {
		t.Errorf("server status of guard: denied %d, visitors %d; want 3, 2", m.Denied, m.Visitors)
	}

	// The download, untouched by the reload.
	if _, err := io.Copy(h, dl); err != nil {
		t.Fatal(err)
	}
	_ = dl.Close()
	if [32]byte(h.Sum(nil)) != <-sent {
		t.Fatal("the download through the unchanged mapping arrived corrupted")
	}
	if strings.Contains(cli.output(), "disconnected") || strings.Contains(srv.output(), "client session ended") {
		t.Error("the reload cut the session")
	}
	stopBoth(t, cli, srv)
}

// TestServerReloadDenyIPs: the server's SIGHUP adding a server-wide
// deny_ips entry resets the next visitor from that address at the door,
// before any data stream is opened (the client serves none, the local
// service gets no connection, the server counts it denied), while other
// addresses and the denied address's live connection go on; a reload
// that removes the entry lets that address in again.
func TestServerReloadDenyIPs(t *testing.T) {
	leakCheck(t)
	const token = "deny-reload-token-0123456789"
	srv, sFile, addr, sAPI := aclServer(t, token)
	be, conns := countingEcho(t)
	cli := startProc(t, nil, "client", "--config", writeFile(t, "client.toml", fmt.Sprintf(
		"server_addr = %q\ntoken = %q\nname = \"denied\"\n[admin]\naddr = \":0\"\n[log]\nformat = \"json\"\n"+
			"[[mappings]]\nname = \"svc\"\nlocal_addr = %q\nhealth_check = false\n", addr, token, be.addr)))
	lines := waitLogs(t, cli, map[string]func(map[string]any) bool{"admin": msgIs("admin api listening"), "svc": upLineOf("svc")})
	cAPI, port := lines["admin"]["addr"].(string), int(lines["svc"]["remote_port"].(float64))

	echoFrom(t, visitorIn, port, 1, 256<<10) // 127.0.0.2, before any list
	live, err := dialFrom(visitorIn, port)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	echoOnce(t, live, "before")
	reload := func(lists string) {
		t.Helper()
		writeServerLists(t, sFile, token, lists)
		_ = srv.cmd.Process.Signal(syscall.SIGHUP)
		srv.waitLog(t, "reloaded", msgIs("reloaded"))
	}

	// deny_ips = ["127.0.0.2"]: its next visitor is reset at the door.
	reload(`deny_ips = ["127.0.0.2"]`)
	resetFrom(t, visitorIn, port)
	if n := conns.Load(); n != 2 {
		t.Errorf("the local service got %d connections, want 2 (the echo and the live one; none for the denied)", n)
	}
	if m := clientRow(t, clientDoc(t, cAPI), "svc"); m.Visitors != 2 {
		t.Errorf("the client served %d data streams, want 2: the denied visitor opened one", m.Visitors)
	}
	if m := serverRow(t, serverDoc(t, sAPI), "denied", "svc"); m.Denied != 1 || m.Visitors != 2 {
		t.Errorf("server status of svc: denied %d, visitors %d; want 1, 2", m.Denied, m.Visitors)
	}
	if got := scrape(t, sAPI, "")["gotunnel_visitor_denied_total{client=denied,mapping=svc}"]; got != 1 {
		t.Errorf("gotunnel_visitor_denied_total = %v, want 1", got)
	}
	echoFrom(t, visitorBanned, port, 2, 64<<10) // 127.0.0.3 is not denied
	echoOnce(t, live, "during")                 // a live connection is not cut

	// The entry removed: 127.0.0.2 gets in again.
	reload("")
	echoFrom(t, visitorIn, port, 3, 256<<10)
	if n := conns.Load(); n != 4 {
		t.Errorf("the local service got %d connections, want 4", n)
	}
	if m := serverRow(t, serverDoc(t, sAPI), "denied", "svc"); m.Denied != 1 || m.Visitors != 4 {
		t.Errorf("server status of svc after the entry went: denied %d, visitors %d; want 1, 4", m.Denied, m.Visitors)
	}
	if m := clientRow(t, clientDoc(t, cAPI), "svc"); m.Visitors != 4 {
		t.Errorf("the client served %d data streams in all, want 4", m.Visitors)
	}
	echoOnce(t, live, "after")
	_ = live.Close()
	stopBoth(t, cli, srv)
}
