package test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tagged answers every connection with its tag, then echoes.
func tagged(tag string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := io.WriteString(c, tag); err != nil {
			return
		}
		echo(c)
	}
}

// readTag dials port and reads the backend's tag of len(want) bytes.
func readTag(t *testing.T, port int, want string) net.Conn {
	t.Helper()
	v := dialPort(t, port)
	_ = v.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(v, got); err != nil || string(got) != want {
		t.Fatalf("port %d answered %q (%v), want %q", port, got, err, want)
	}
	_ = v.SetReadDeadline(time.Time{})
	return v
}

// TestClientReload: a running client re-reads its file on SIGHUP and on
// `gotunnel-mux reload`: a mapping added, one removed and one changed,
// all in the live session, while a 64 MiB download runs through a
// mapping that did not change (it arrives intact); the changed mapping's
// live visitor goes on with its old local service while new visitors
// reach the new one; the removed mapping's port is freed on the server;
// a bad file changes nothing and `reload` exits 2 naming file, line and
// key.
func TestClientReload(t *testing.T) {
	leakCheck(t)
	const token = "reload-test-token-0123456789"
	srv := startProc(t, nil, "server", "--config", writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = "127.0.0.1:0"
token = %q
public_addr = "127.0.0.1"
[log]
format = "json"
`, token)))
	addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)

	const size = 64 << 20
	sent := make(chan [32]byte, 1)
	big := startBackend(t, func(c net.Conn) {
		if sum, err := stream(c, 5, size); err == nil {
			sent <- sum
		}
		_ = c.(*net.TCPConn).CloseWrite()
	})
	one, two, three := startBackend(t, tagged("one:")), startBackend(t, tagged("two:")), startBackend(t, tagged("new:"))
	mapping := func(name, local string) string {
		return fmt.Sprintf("[[mappings]]\nname = %q\nlocal_addr = %q\nhealth_check = false\n", name, local)
	}
	head := fmt.Sprintf("server_addr = %q\ntoken = %q\nname = \"reloader\"\n[admin]\naddr = \":0\"\n[log]\nformat = \"json\"\n", addr, token)
	file := writeFile(t, "client.toml", head+mapping("big", big.addr)+mapping("svc", one.addr)+mapping("old", one.addr))
	rewrite := func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	upLine := func(name string) func(map[string]any) bool {
		return func(m map[string]any) bool {
			msg, _ := m["msg"].(string)
			return m["mapping"] == name && strings.HasPrefix(msg, name+"  tcp://")
		}
	}
	cli := startProc(t, nil, "client", "--config", file)
	lines := waitLogs(t, cli, map[string]func(map[string]any) bool{
		"admin": msgIs("admin api listening"), "big": upLine("big"), "svc": upLine("svc"), "old": upLine("old"),
	})
	adminURL := lines["admin"]["addr"].(string)
	port := func(name string) int { return int(lines[name]["remote_port"].(float64)) }

	// The download starts, and svc has a live visitor on the first service.
	dl := dialPort(t, port("big"))
	h := sha256.New()
	if _, err := io.CopyN(h, dl, 4<<20); err != nil {
		t.Fatal(err)
	}
	live := readTag(t, port("svc"), "one:")
	echoOnce(t, live, "before")

	// SIGHUP: svc moves to the second service, old goes, new comes.
	rewrite(head + mapping("big", big.addr) + mapping("svc", two.addr) + mapping("new", three.addr))
	_ = cli.cmd.Process.Signal(syscall.SIGHUP)
	got := waitLogs(t, cli, map[string]func(map[string]any) bool{
		"reloaded": msgIs("reloaded"), "new": upLine("new"), "svc": upLine("svc"),
	})
	if r := got["reloaded"]; r["added"] != 1.0 || r["removed"] != 1.0 || r["changed"] != 1.0 {
		t.Errorf("reload line = %v, want 1 added, 1 removed, 1 changed", r)
	}
	readTag(t, int(got["new"]["remote_port"].(float64)), "new:").Close()
	readTag(t, int(got["svc"]["remote_port"].(float64)), "two:").Close()
	echoOnce(t, live, "after") // the changed mapping's live visitor goes on with the old service
	_ = live.Close()
	oldPort := strconv.Itoa(port("old"))
	poll(t, 10*time.Second, "the removed mapping's port freed", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+oldPort, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	})

	// A bad file: reload over the API refuses it, names it, changes nothing.
	rewrite(head + mapping("big", big.addr) + "[[mappings]]\nname = \"svc\"\nlocal_adr = \"127.0.0.1:1\"\n")
	out, err := exec.Command(buildBinary(t), "reload", "--admin", adminURL).CombinedOutput()
	if code := exitOf(err); code != 2 || !strings.Contains(string(out), "client.toml:") || !strings.Contains(string(out), "local_adr") {
		t.Errorf("reload of a bad file: exit %d, output %q; want exit 2 naming the file's line and local_adr", code, out)
	}
	readTag(t, int(got["new"]["remote_port"].(float64)), "new:").Close()
	readTag(t, int(got["svc"]["remote_port"].(float64)), "two:").Close()

	// The download, untouched by all of it.
	if _, err := io.Copy(h, dl); err != nil {
		t.Fatal(err)
	}
	_ = dl.Close()
	if [32]byte(h.Sum(nil)) != <-sent {
		t.Fatal("the download through an unchanged mapping arrived corrupted")
	}
	if strings.Contains(cli.output(), "client session ended") || strings.Contains(cli.output(), "disconnected") {
		t.Error("the reload cut the session")
	}

	stopBoth(t, cli, srv)
}
