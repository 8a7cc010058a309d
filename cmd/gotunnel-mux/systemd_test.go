package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifySocket is a unixgram socket standing in for systemd's: it sets
// NOTIFY_SOCKET to its path for the test and reads what is sent to it.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 { // a socket path has at most 107 bytes
		var err error
		if dir, err = os.MkdirTemp("", "sd"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
	}
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &notifySocket{t: t, conn: conn}
}

// read returns the next datagram, failing the test after wait.
func (s *notifySocket) read(wait time.Duration) string {
	s.t.Helper()
	msg, err := s.tryRead(wait)
	if err != nil {
		s.t.Fatalf("no datagram on NOTIFY_SOCKET within %v: %v", wait, err)
	}
	return msg
}

// tryRead returns the next datagram or an error after wait.
func (s *notifySocket) tryRead(wait time.Duration) (string, error) {
	buf := make([]byte, 4096)
	if err := s.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return "", err
	}
	n, err := s.conn.Read(buf)
	return string(buf[:n]), err
}

// expectNone fails if a datagram is waiting. Every send of the code under
// test has returned before it is called, and a unixgram send is queued at
// the reader when it returns, so a short wait is enough.
func (s *notifySocket) expectNone() {
	s.t.Helper()
	if msg, err := s.tryRead(10 * time.Millisecond); err == nil {
		s.t.Fatalf("unexpected datagram %q", msg)
	}
}

func TestNotifyMessages(t *testing.T) {
	cases := []struct {
		name string
		call func()
		want string
	}{
		{"ready", func() { notifyReady("serving on :7000") }, "READY=1\nSTATUS=serving on :7000"},
		{"status", func() { notifyStatus("2 clients") }, "STATUS=2 clients"},
		{"stopping", notifyStopping, "STOPPING=1"},
		{"reloaded", func() { notifyReloaded("certificate reloaded") }, "READY=1\nSTATUS=certificate reloaded"},
		// A newline in a status must not start an assignment of its own.
		{"status newline", func() { notifyStatus("x\nREADY=1\r\nSTOPPING=1") }, "STATUS=x READY=1  STOPPING=1"},
		{"ready newline", func() { notifyReady("a\nWATCHDOG=1") }, "READY=1\nSTATUS=a WATCHDOG=1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newNotifySocket(t)
			tc.call()
			if got := s.read(time.Second); got != tc.want {
				t.Errorf("sent %q, want %q", got, tc.want)
			}
			s.expectNone()
		})
	}
}

// TestNotifyReloading: RELOADING=1 carries MONOTONIC_USEC, the time on
// CLOCK_MONOTONIC at the call, which systemd 253+ matches to its reload.
func TestNotifyReloading(t *testing.T) {
	s := newNotifySocket(t)
	before := monotonicUsec(t)
	notifyReloading()
	after := monotonicUsec(t)
	got := s.read(time.Second)
	m := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=([0-9]+)$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("sent %q, want RELOADING=1 and MONOTONIC_USEC=<usec>", got)
	}
	if usec, _ := strconv.ParseInt(m[1], 10, 64); usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, want within [%d, %d]", usec, before, after)
	}
}

func monotonicUsec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// runWatchdogOrFail runs runWatchdog and fails if it does not return
// within a second.
func runWatchdogOrFail(t *testing.T, ctx context.Context, alive func() error, log *slog.Logger) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runWatchdog(ctx, alive, log)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("runWatchdog did not return within 1s")
	}
}

// TestWatchdogNotEnabled: runWatchdog returns at once, without calling
// alive, when systemd watches no watchdog for this process.
func TestWatchdogNotEnabled(t *testing.T) {
	cases := []struct{ name, usec, pid string }{
		{"no WATCHDOG_USEC", "", ""},
		{"another process", "40000", strconv.Itoa(os.Getpid() + 1)},
		{"bad WATCHDOG_USEC", "soon", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newNotifySocket(t)
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			runWatchdogOrFail(t, context.Background(), func() error {
				t.Error("alive called without a watchdog")
				return nil
			}, nil)
			s.expectNone()
		})
	}
}

// aliveProbe is an alive func for runWatchdog that the test switches
// between healthy and failing, and that reports each call.
type aliveProbe struct {
	calls chan error // what each call returned, in order
	mu    sync.Mutex
	err   error
}

func newAliveProbe() *aliveProbe { return &aliveProbe{calls: make(chan error, 1024)} }

func (p *aliveProbe) alive() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls <- p.err
	return p.err
}

func (p *aliveProbe) set(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

// waitCalls waits for n more calls of alive that return want (skipping
// the others), and fails after a deadline.
func (p *aliveProbe) waitCalls(t *testing.T, n int, want error) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for n > 0 {
		select {
		case err := <-p.calls:
			if errors.Is(err, want) {
				n--
			}
		case <-deadline:
			t.Fatalf("runWatchdog did not call alive %d more times within 5s", n)
		}
	}
}

// logBuffer is a debug-level text logger for the test to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(msg string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), "msg="+strconv.Quote(msg))
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func startTestWatchdog(t *testing.T, usec string, p *aliveProbe, log *slog.Logger) (stop func()) {
	t.Helper()
	t.Setenv("WATCHDOG_USEC", usec)
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runWatchdog(ctx, p.alive, log)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatal("runWatchdog did not return within 1s of ctx ending")
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestWatchdogPings: WATCHDOG=1 every half interval while alive returns
// nil; nothing, and one warning, while it fails; pings again once it
// recovers, and warns again at the next failure; a prompt return when ctx
// ends.
func TestWatchdogPings(t *testing.T) {
	s := newNotifySocket(t)
	p := newAliveProbe()
	var logs logBuffer
	stop := startTestWatchdog(t, "40000", p, logs.logger()) // pings every 20ms

	start := time.Now()
	for range 3 {
		if got := s.read(time.Second); got != "WATCHDOG=1" {
			t.Fatalf("sent %q, want WATCHDOG=1", got)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("3 pings took %v, want about 40ms (an interval of 40ms)", d)
	}

	notAlive := errors.New("stuck")
	p.set(notAlive)
	p.waitCalls(t, 1, notAlive)
	// Every ping sent before the first failing call is queued by now.
	for {
		msg, err := s.tryRead(10 * time.Millisecond)
		if err != nil {
			break
		}
		if msg != "WATCHDOG=1" {
			t.Fatalf("sent %q, want WATCHDOG=1", msg)
		}
	}
	p.waitCalls(t, 3, notAlive)
	s.expectNone()
	if n := logs.count("watchdog: not alive"); n != 1 {
		t.Errorf("logged %q %d times over 4 failing checks, want 1\n%s", "watchdog: not alive", n, logs.String())
	}
	if !strings.Contains(logs.String(), "err=stuck") {
		t.Errorf("the warning does not carry alive's error:\n%s", logs.String())
	}

	p.set(nil)
	if got := s.read(time.Second); got != "WATCHDOG=1" {
		t.Fatalf("after recovery sent %q, want WATCHDOG=1", got)
	}
	p.set(notAlive)             // a new failure is warned about anew
	p.waitCalls(t, 2, notAlive) // the first one's warning is written by the second

	if n := logs.count("watchdog: not alive"); n != 2 {
		t.Errorf("logged %q %d times over two failures, want 2\n%s", "watchdog: not alive", n, logs.String())
	}

	stop() // fails unless runWatchdog returns within 1s of ctx ending
}

// TestWatchdogSendFails: a NOTIFY_SOCKET that no one reads is logged once
// at debug, not at each ping, and does not stop the loop.
func TestWatchdogSendFails(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	p := newAliveProbe()
	var logs logBuffer
	startTestWatchdog(t, "20000", p, logs.logger())
	p.waitCalls(t, 4, nil)
	if n := logs.count("watchdog: cannot notify systemd"); n != 1 {
		t.Errorf("logged a failed send %d times over 4 pings, want 1\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Errorf("a failed send is not logged at debug:\n%s", logs.String())
	}
}

// The unit files of docs/systemd and the lines each must have.
var systemdUnits = []struct {
	file  string
	lines []string
}{
	{"gotunnel-mux-server.service", []string{
		"ExecStart=/usr/local/bin/gotunnel-mux server --config /etc/gotunnel-mux/server.toml",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
	}},
	{"gotunnel-mux-client.service", []string{
		"ExecStart=/usr/local/bin/gotunnel-mux client --config /etc/gotunnel-mux/client.toml",
		"CapabilityBoundingSet=",
	}},
}

// systemdCommonLines are in both units.
var systemdCommonLines = []string{
	"Type=notify",
	"NotifyAccess=main",
	"ExecReload=/bin/kill -HUP $MAINPID",
	"Restart=on-failure",
	"RestartSec=2s",
	fmt.Sprintf("RestartPreventExitStatus=%d %d", exitUsage, exitRefused), // main.go's codes
	"WatchdogSec=30s",
	"Environment=GOTRACEBACK=crash",
	"LimitCORE=0",
	"DynamicUser=yes",
	"NoNewPrivileges=yes",
	"ProtectSystem=strict",
	"ProtectHome=yes",
	"PrivateTmp=yes",
	"PrivateDevices=yes",
	"ProtectKernelTunables=yes",
	"ProtectKernelModules=yes",
	"ProtectKernelLogs=yes",
	"ProtectControlGroups=yes",
	"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
	"RestrictNamespaces=yes",
	"LockPersonality=yes",
	"MemoryDenyWriteExecute=yes",
	"SystemCallArchitectures=native",
	"ConfigurationDirectory=gotunnel-mux",
}

func readUnit(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "systemd", file))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSystemdUnitLines: each unit has the lines the notify support, the
// exit codes and the hardening depend on.
func TestSystemdUnitLines(t *testing.T) {
	if exitUsage != 2 || exitRefused != 3 {
		t.Errorf("exit codes %d and %d: update RestartPreventExitStatus= in docs/systemd", exitUsage, exitRefused)
	}
	for _, u := range systemdUnits {
		lines := strings.Split(readUnit(t, u.file), "\n")
		for _, want := range append(slices.Clone(systemdCommonLines), u.lines...) {
			if !slices.Contains(lines, want) {
				t.Errorf("%s: no line %q", u.file, want)
			}
		}
	}
}

// TestSystemdUnitVerify runs systemd-analyze verify on copies of both
// units whose ExecStart is a gotunnel-mux built for the test.
func TestSystemdUnitVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("cmd/gotunnel-mux: systemd-analyze not found; the unit files in docs/systemd are not verified")
	}
	dir := t.TempDir()
	bin := buildForUnit(t, dir)
	var paths []string
	for _, u := range systemdUnits {
		unit := readUnit(t, u.file)
		copied := strings.ReplaceAll(unit, "ExecStart=/usr/local/bin/gotunnel-mux ", "ExecStart="+bin+" ")
		if copied == unit {
			t.Fatalf("%s: no ExecStart=/usr/local/bin/gotunnel-mux to replace", u.file)
		}
		p := filepath.Join(dir, u.file)
		if err := os.WriteFile(p, []byte(copied), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	var ours, other []string
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.Contains(line, dir) || strings.Contains(line, "gotunnel-mux"):
			ours = append(ours, line)
		default:
			// About the host's own units (in a container some are
			// missing or half set up), not ours: shown, not failed on.
			other = append(other, line)
		}
	}
	if len(other) > 0 {
		t.Logf("systemd-analyze verify, about other units (ignored):\n%s", strings.Join(other, "\n"))
	}
	// verify exits 0 after an unknown key or a bad value ("ignoring"):
	// every line about our units fails the test.
	if len(ours) > 0 {
		t.Errorf("systemd-analyze verify:\n%s", strings.Join(ours, "\n"))
	}
	if err != nil && len(ours) == 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// buildForUnit builds gotunnel-mux into dir and returns its path.
func buildForUnit(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "gotunnel-mux")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// unitEnvironment is the Environment= assignments of a unit.
func unitEnvironment(unit string) []string {
	var env []string
	for line := range strings.Lines(unit) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Environment="); ok {
			env = append(env, strings.Fields(v)...)
		}
	}
	return env
}

// TestSystemdUnitWatchdogAbortRestarts: the SIGABRT that systemd sends
// when the watchdog expires kills the server by that signal, with every
// goroutine in the journal, rather than ending it with exit status 2,
// which RestartPreventExitStatus= keeps from restarting. Without the
// unit's GOTRACEBACK=crash, the Go runtime exits 2 on SIGABRT (and on a
// panic), and a wedged process would stay down.
func TestSystemdUnitWatchdogAbortRestarts(t *testing.T) {
	dir := t.TempDir()
	bin := buildForUnit(t, dir)
	cfg := filepath.Join(dir, "server.toml")
	if err := os.WriteFile(cfg, []byte("bind_addr = \"127.0.0.1:0\"\ntoken = \"0123456789abcdef0123456789abcdef\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noCore(t) // as LimitCORE=0

	cmd := exec.Command(bin, "server", "--config", cfg)
	cmd.Env = append(os.Environ(), "GOTRACEBACK=none") // the unit's setting must win
	cmd.Env = append(cmd.Env, unitEnvironment(readUnit(t, "gotunnel-mux-server.service"))...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	listening := make(chan struct{})
	read := make(chan struct{})
	go func() { // the process's stderr, until it exits
		defer close(read)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "server listening") {
				close(listening)
			}
		}
	}()
	select {
	case <-listening:
	case <-read:
		t.Fatalf("the server exited before listening")
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-read
		_ = cmd.Wait()
		t.Fatalf("the server did not log %q within 10s:\n%s", "server listening", out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGABRT); err != nil {
		t.Fatal(err)
	}
	<-read
	err = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Errorf("after SIGABRT: %v (exit status %d), want killed by SIGABRT:\n%s", err, cmd.ProcessState.ExitCode(), out.String())
	}
	if !strings.Contains(out.String(), "goroutine ") {
		t.Errorf("after SIGABRT, no goroutine dump on stderr:\n%s", out.String())
	}
}

// noCore sets RLIMIT_CORE to 0 for the processes the test starts, as
// LimitCORE=0 does, and restores it afterwards.
func noCore(t *testing.T) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{Cur: 0, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_CORE, &old) })
}
