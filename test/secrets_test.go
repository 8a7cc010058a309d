package test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
)

// lockedBuffer is a bytes.Buffer safe for concurrent log writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTokenNeverLogged runs a whole session lifecycle with debug logs in
// text and JSON: a wrong token, a login, registrations, visitors, a
// takeover, a session dropped by a cut link, a reconnect, shutdown. Neither
// the token nor the wrong guess may appear anywhere.
func TestTokenNeverLogged(t *testing.T) {
	leakCheck(t)
	const token, guess = "s3cr3t-T0KEN-never-in-logs", "wr0ng-GUESS-never-in-logs"
	var out lockedBuffer
	both := func(side string) *slog.Logger {
		opts := &slog.HandlerOptions{Level: slog.LevelDebug}
		return slog.New(teeHandler{slog.NewTextHandler(&out, opts), slog.NewJSONHandler(&out, opts)}).With("side", side)
	}
	so := fastServer()
	so.Token, so.Logger = token, both("server")
	srv := startServer(t, so)
	px := startFaultProxy(t, srv.addr)
	be := startBackend(t, echo)

	bad := fastClient(srv.addr, "intruder")
	bad.Token, bad.Logger = guess, both("intruder")
	intruder := startClientOpts(t, bad)
	if err := <-intruder.done; err == nil {
		t.Fatal("the wrong token was accepted")
	}
	close(intruder.done)

	good := fastClient(px.addr, "owner", client.Mapping{Name: "e", LocalAddr: be.addr})
	good.Token, good.Logger = token, both("client")
	cl := startClientOpts(t, good)
	if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 1, 8<<10); err != nil {
		t.Fatal(err)
	}
	px.cutAll()
	if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 2, 8<<10); err != nil {
		t.Fatal(err)
	}
	twin := fastClient(srv.addr, "owner")
	twin.Token, twin.Logger = token, both("twin")
	tw := startClientOpts(t, twin)
	tw.waitEvent(t, client.EventSessionUp, "")
	_ = tw.stop(t)
	_ = cl.stop(t)
	srv.stop(t)

	logs := out.String()
	if !strings.Contains(logs, "client logged in") || !strings.Contains(logs, "code=1002") {
		t.Fatalf("the lifecycle did not happen as planned; logs:\n%s", logs)
	}
	for _, secret := range []string{token, guess} {
		if strings.Contains(logs, secret) {
			t.Errorf("a token appears in the logs: %q", secret)
		}
	}
	t.Logf("%d bytes of debug logs, no token in them", len(logs))
}

// teeHandler writes every record to each handler.
type teeHandler []slog.Handler

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool { return h[0].Enabled(ctx, l) }

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, x := range h {
		_ = x.Handle(ctx, r.Clone())
	}
	return nil
}

func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(teeHandler, len(h))
	for i, x := range h {
		out[i] = x.WithAttrs(as)
	}
	return out
}

func (h teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(h))
	for i, x := range h {
		out[i] = x.WithGroup(name)
	}
	return out
}

// TestBinaryNeverLogsSecrets: the binaries at debug level, with TLS files
// and the token in the environment, a wrong token too; neither token nor
// any line of the private keys reaches stderr.
func TestBinaryNeverLogsSecrets(t *testing.T) {
	leakCheck(t)
	const token = "env-T0KEN-never-in-logs"
	dir := t.TempDir()
	ca := newCA(t, "secret CA")
	cert := ca.issue(t, "server", false, time.Time{})
	certFile, keyFile := cert.files(t, dir, "server")
	caFile := writeFile(t, "ca.pem", string(ca.pem))
	srvCfg := writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = "127.0.0.1:0"
public_addr = "127.0.0.1"
[tls]
cert_file = %q
key_file = %q
[log]
level = "debug"
format = "json"
`, certFile, keyFile))
	srv := startProc(t, []string{"GOTUNNEL_TOKEN=" + token}, "server", "--config", srvCfg)
	addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
	be := startBackend(t, echo)
	cliCfg := writeFile(t, "client.toml", fmt.Sprintf(`
server_addr = %q
token = "file-token-is-overridden"
[tls]
ca_file = %q
[log]
level = "debug"
[[mappings]]
name = "e"
local_addr = %q
`, addr, caFile, be.addr))
	cli := startProc(t, []string{"GOTUNNEL_TOKEN=" + token, "NO_COLOR=1"}, "client", "--config", cliCfg)
	var port int
	if err := pollFor(20*time.Second, func() bool {
		_, after, ok := strings.Cut(cli.output(), "e  tcp://127.0.0.1:")
		if ok {
			fmt.Sscanf(after, "%d", &port)
		}
		return port != 0
	}); err != nil {
		t.Fatalf("mapping never came up:\n%s", cli.output())
	}
	if err := echoRoundTrip(port, 3, 64<<10); err != nil {
		t.Fatal(err)
	}
	wrong := startProc(t, []string{"GOTUNNEL_TOKEN=wrong-GUESS-never-in-logs"}, "client", "--config", cliCfg)
	if code := wrong.exitCode(t, 15*time.Second); code != 3 {
		t.Errorf("wrong token: exit %d, want 3", code)
	}
	for _, p := range []*proc{cli, srv} {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		p.exitCode(t, 15*time.Second)
	}
	all := srv.output() + cli.output() + wrong.output()
	secrets := []string{token, "wrong-GUESS-never-in-logs", "file-token-is-overridden"}
	for _, line := range strings.Split(strings.TrimSpace(string(cert.keyPEM)), "\n") {
		if !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a secret appears in the logs: %q", s)
		}
	}
}
