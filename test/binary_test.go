package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// built is the gotunnel-mux command built once per flavour for the tests
// that drive it as a user would: with the race detector, and plain (for
// memory figures that mean something).
type built struct {
	once sync.Once
	path string
	err  error
}

var raceBinary, plainBinary built

func buildBinary(t *testing.T) string { return raceBinary.get(t, "-race") }

func buildPlainBinary(t *testing.T) string { return plainBinary.get(t) }

func (b *built) get(t *testing.T, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "gotunnel-mux-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "gotunnel-mux")
		args := append(append([]string{"build"}, flags...), "-o", b.path, "../cmd/gotunnel-mux")
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// proc is a running gotunnel-mux process whose stderr is read as JSON log
// lines (or kept as text when not JSON).
type proc struct {
	cmd   *exec.Cmd
	lines chan map[string]any
	mu    sync.Mutex
	all   []string
	done  chan struct{}
	err   error
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startBinary(t, buildBinary(t), env, args...)
}

func startBinary(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), lines: make(chan map[string]any, 1024), done: make(chan struct{})}
	// The race runtime sleeps a second at exit unless told not to.
	p.cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // ends at the process's exit, joined through p.done
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.all = append(p.all, line)
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil {
				select {
				case p.lines <- m:
				default:
				}
			}
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.all, "\n")
}

// waitLog waits for a JSON log line for which match holds.
func (p *proc) waitLog(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-p.lines:
			if match(m) {
				return m
			}
		case <-p.done:
			t.Fatalf("process exited (%v) before logging %s", p.err, what)
		case <-timeout:
			t.Fatalf("no log line %s within 20s", what)
		}
	}
}

// exitCode waits for the process to exit and returns its code.
func (p *proc) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("process still running after %s", within)
	}
	return p.cmd.ProcessState.ExitCode()
}

// program returns the first of names that exec.LookPath finds: a
// program from a distribution's package that a test drives. Without one
// the test skips with msg, unless the environment variable require is
// "1" (CI sets it), where it fails: CI cannot skip it silently.
func program(t *testing.T, require, msg string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv(require) == "1" {
		t.Fatalf("%s (%s=1)", msg, require)
	}
	t.Skip(msg)
	return ""
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func msgIs(s string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["msg"] == s }
}

// TestBinaryEndToEnd drives the built binary with real config files, as a
// user would: server, client, a visitor, check, a refused client, SIGTERM.
func TestBinaryEndToEnd(t *testing.T) {
	leakCheck(t)
	serverToml := writeFile(t, "server.toml", `
bind_addr = "127.0.0.1:0"
token = "binary-test-token-123456"
public_addr = "127.0.0.1"

[log]
level = "debug"
format = "json"
`)
	srv := startProc(t, nil, "server", "--config", serverToml)
	addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)

	be := startBackend(t, echo)
	clientToml := writeFile(t, "client.toml", fmt.Sprintf(`
server_addr = %q
token = "binary-test-token-123456"
name = "bin"

[log]
format = "json"

[[mappings]]
name = "echo"
local_addr = %q
remote_port = 0
`, addr, be.addr))
	cli := startProc(t, nil, "client", "--config", clientToml)
	up := cli.waitLog(t, "mapping echo up", func(m map[string]any) bool {
		msg, _ := m["msg"].(string)
		return m["mapping"] == "echo" && strings.HasPrefix(msg, "echo  tcp://127.0.0.1:")
	})
	port := int(up["remote_port"].(float64))
	if err := echoRoundTrip(port, 11, 1<<20); err != nil {
		t.Fatal(err)
	}

	// check: a good file, and a bad one named with its line.
	if out, err := exec.Command(buildBinary(t), "check", "--config", serverToml).CombinedOutput(); err != nil {
		t.Errorf("check good file: %v\n%s", err, out)
	}
	bad := writeFile(t, "bad.toml", "server_addr = \"h:1\"\ntoken = \"x\"\nheartbeat_intervall = \"5s\"\n")
	out, err := exec.Command(buildBinary(t), "check", "--config", bad).CombinedOutput()
	if code := exitOf(err); code != 2 || !strings.Contains(string(out), "bad.toml:3") || !strings.Contains(string(out), "heartbeat_intervall") {
		t.Errorf("check bad file: exit %d, output %q; want exit 2 naming bad.toml:3 and the key", code, out)
	}

	// A client with the wrong token stops at once with exit 3.
	wrong := startProc(t, []string{"GOTUNNEL_TOKEN="}, "client", "--server", addr, "--token", "not-the-token", "--map", "x=0:"+be.addr)
	if code := wrong.exitCode(t, 15*time.Second); code != 3 {
		t.Errorf("client with a wrong token exited %d, want 3\n%s", code, wrong.output())
	}

	// SIGTERM: both stop cleanly.
	_ = cli.cmd.Process.Signal(syscall.SIGTERM)
	if code := cli.exitCode(t, 10*time.Second); code != 0 {
		t.Errorf("client exit code after SIGTERM = %d, want 0", code)
	}
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	if code := srv.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("server exit code after SIGTERM = %d, want 0", code)
	}
}

func exitOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
