package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClientCredentials drives the binaries with [[clients]] and no shared
// token: a hashed token logs in; client a's token cannot take b's name
// (1002, in words: the client stops with exit 3) nor a port of b's (1003,
// in words); rotating a's token on a server reload ends a's session only,
// while b's visitor goes on.
func TestClientCredentials(t *testing.T) {
	leakCheck(t)
	const tokA, tokB = "client-a-own-token-0123456789", "client-b-own-token-9876543210"
	sumB := sha256.Sum256([]byte(tokB))
	file := writeFile(t, "server.toml", "")
	write := func(a string) {
		t.Helper()
		err := os.WriteFile(file, []byte(fmt.Sprintf(`bind_addr = "127.0.0.1:0"
public_addr = "127.0.0.1"
[log]
format = "json"
[[clients]]
name = "a"
token = %q
allow_ports = ["21000-21010"]
[[clients]]
name = "b"
token_sha256 = %q
allow_ports = ["22000-22010"]
`, a, hex.EncodeToString(sumB[:]))), 0o600)
		if err != nil {
			t.Fatal(err)
		}
	}
	write(tokA)
	srv := startProc(t, nil, "server", "--config", file)
	addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
	be := startBackend(t, echo)
	client := func(name, token string, port int) *proc {
		return startProc(t, []string{"GOTUNNEL_TOKEN="}, "client", "--config", writeFile(t, name+".toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = %q
[log]
format = "json"
[[mappings]]
name = "svc"
local_addr = %q
remote_port = %d
health_check = false
`, addr, token, name, be.addr, port)))
	}
	upAt := func(p *proc, port int) {
		t.Helper()
		p.waitLog(t, fmt.Sprintf("mapping up on %d", port), func(m map[string]any) bool {
			msg, _ := m["msg"].(string)
			return strings.HasPrefix(msg, "svc  tcp://") && m["remote_port"] == float64(port)
		})
	}

	b := client("b", tokB, 22005) // logs in with the token whose hash alone the server holds
	upAt(b, 22005)
	a := client("a", tokA, 21001)
	upAt(a, 21001)
	if err := echoRoundTrip(22005, 1, 64<<10); err != nil {
		t.Fatalf("b's mapping: %v", err)
	}

	// a's token under b's name: refused in words, exit 3.
	intruder := client("b", tokA, 22006)
	if code := intruder.exitCode(t, 15*time.Second); code != 3 || !strings.Contains(intruder.output(), `this token is not valid for the name \"b\"`) {
		t.Errorf("a's token as b: exit %d, want 3 naming the name\n%s", intruder.exitCode(t, time.Second), intruder.output())
	}
	// a's token on one of b's ports: that mapping refused, 1003 in words.
	grab := client("a", tokA, 22007)
	refused := grab.waitLog(t, "mapping refused", msgIs("mapping refused"))
	if refused["code"] != 1003.0 || !strings.Contains(fmt.Sprint(refused["reason"]), "outside this client's allow_ports") {
		t.Errorf("a on b's port: %v, want 1003 outside this client's allow_ports", refused)
	}
	_ = grab.cmd.Process.Signal(syscall.SIGTERM)
	grab.exitCode(t, 15*time.Second)

	// Rotate a's token: a's session ends (1002, exit 3), b's goes on.
	live := dialPort(t, 22005)
	echoOnce(t, live, "before")
	write("client-a-rotated-token-000000000")
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	if code := a.exitCode(t, 15*time.Second); code != 3 {
		t.Errorf("a after its token was rotated: exit %d, want 3", code)
	}
	echoOnce(t, live, "after")
	_ = live.Close()
	if strings.Contains(b.output(), "disconnected") {
		t.Error("rotating a's token disturbed b's session")
	}

	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	if code := b.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("b exit = %d", code)
	}
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("server exit = %d", code)
	}
	for _, p := range []*proc{srv, a, b, intruder} {
		if o := p.output(); strings.Contains(o, tokA) || strings.Contains(o, tokB) {
			t.Error("a token was logged")
		}
	}
}
