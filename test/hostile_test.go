package test

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
)

// procMemory reads a process's resident and peak resident memory in KiB.
func procMemory(t *testing.T, pid int) (rss, hwm int) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// closedWithin waits for the server to close c (EOF or reset) and returns
// how long it took; it fails the test if c is still open after d.
func closedWithin(t *testing.T, what string, c net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: connection still open after %s", what, d)
	}
	return took
}

// rawYamux opens a yamux session to addr with no protocol on top, for
// attacks below the control protocol.
func rawYamux(t *testing.T, addr string) (*yamux.Session, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.EnableKeepAlive = false
	s, err := yamux.Client(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c
}

func controlFrame(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestBinaryHostileInput throws what the open internet throws at the real
// server (a plain build, so that its memory figures mean something) while
// a legitimate client, logged in first, keeps using its mapping. Every
// hostile connection must be closed within login_timeout plus a margin,
// and the server's memory must stay bounded.
func TestBinaryHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("drives hundreds of connections")
	}
	leakCheck(t)
	const loginTimeout = 2 * time.Second
	limit := loginTimeout + 2*time.Second
	cfg := writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = "127.0.0.1:0"
token = %q
public_addr = "127.0.0.1"
login_timeout = "2s"
bad_login_limit = 5
bad_login_pause = "30s"
[log]
format = "json"
`, testToken))
	srv := startBinary(t, buildPlainBinary(t), nil, "server", "--config", cfg)
	addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
	pid := srv.cmd.Process.Pid

	be := startBackend(t, echo)
	cl := startClientOpts(t, fastClient(addr, "legit", client.Mapping{Name: "e", LocalAddr: be.addr}))
	port := cl.waitUp(t, "e")["e"]
	stillWorks := func(step string) {
		t.Helper()
		if err := echoRoundTrip(port, 7, 64<<10); err != nil {
			t.Errorf("after %s the legitimate client's mapping failed: %v", step, err)
		}
	}
	stillWorks("login")
	rss0, _ := procMemory(t, pid)

	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	attack := func(name string, payload []byte) {
		t.Helper()
		c := dial()
		_, _ = c.Write(payload)
		took := closedWithin(t, name, c, limit)
		t.Logf("%-28s closed after %s", name, took.Round(time.Millisecond))
		stillWorks(name)
	}
	junk := make([]byte, 64<<10)
	_, _ = rand.Read(junk)
	junk[0] = 0x42
	attack("random bytes", junk)
	yamuxJunk := append([]byte{0}, junk[1:]...)
	attack("yamux version, then junk", yamuxJunk)
	attack("an HTTP request", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"))

	frameAttack := func(name string, frame []byte) {
		t.Helper()
		s, c := rawYamux(t, addr)
		st, err := s.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		_ = st.SetWriteDeadline(time.Now().Add(limit))
		_, _ = st.Write(frame)
		took := closedWithin(t, name, c, limit)
		t.Logf("%-28s closed after %s", name, took.Round(time.Millisecond))
		stillWorks(name)
	}
	frameAttack("a 2 GiB length prefix", []byte{0x80, 0, 0, 0})
	frameAttack("malformed JSON", controlFrame(`{"type":"login","version":1,"token":`))
	frameAttack("a 10 MB token", controlFrame(`{"type":"login","version":1,"name":"x","token":"`+strings.Repeat("t", 10<<20)+`"}`))

	streamFlood := func(name string, login bool) {
		t.Helper()
		s, c := rawYamux(t, addr)
		ctl, err := s.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if login {
			_, _ = ctl.Write(controlFrame(fmt.Sprintf(`{"type":"login","version":1,"token":%q,"name":"flood"}`, testToken)))
			if _, err := control.ReadFrame(ctl); err != nil {
				t.Fatalf("%s: login: %v", name, err)
			}
		}
		opened := 0
		for range 3000 {
			st, err := s.OpenStream()
			if err != nil {
				break
			}
			_, _ = st.Write([]byte("x"))
			opened++
		}
		took := closedWithin(t, name, c, limit)
		t.Logf("%-28s closed after %s (%d streams opened)", name, took.Round(time.Millisecond), opened)
		stillWorks(name)
	}
	streamFlood("streams before login", false)
	streamFlood("streams after login", true)

	// 500 silent connections: beyond max_unauthenticated_per_ip they are
	// closed at once, the rest at login_timeout.
	var silent []net.Conn
	for range 500 {
		silent = append(silent, dial())
	}
	stillWorks("500 silent connections")
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration
	for i, c := range silent {
		wg.Go(func() {
			took := closedWithin(t, fmt.Sprintf("silent connection %d", i), c, time.Until(start.Add(limit)))
			mu.Lock()
			slowest = max(slowest, took)
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("%-28s all closed within %s", "500 silent connections", slowest.Round(time.Millisecond))

	// 100 wrong tokens in a row: the first five are told 1002, then the
	// address is turned away at once.
	refusedWith1002 := 0
	for i := range 100 {
		s, c := rawYamux(t, addr)
		ctl, err := s.OpenStream()
		if err == nil {
			_, _ = ctl.Write(controlFrame(fmt.Sprintf(`{"type":"login","version":1,"token":"guess-%d","name":"thief"}`, i)))
			_ = ctl.SetReadDeadline(time.Now().Add(limit))
			if m, err := control.ReadFrame(ctl); err == nil {
				if r, ok := m.(*control.LoginResp); ok && r.Code == control.CodeBadToken {
					refusedWith1002++
				}
			}
		}
		closedWithin(t, fmt.Sprintf("wrong token %d", i), c, limit)
		s.Close()
	}
	if refusedWith1002 != 5 {
		t.Errorf("%d wrong-token logins were answered 1002, want 5 (bad_login_limit) before the pause", refusedWith1002)
	}
	if n := strings.Count(srv.output(), `"msg":"address paused after repeated wrong tokens"`); n != 1 {
		t.Errorf("the pause was logged %d times, want once", n)
	}
	stillWorks("100 wrong tokens")

	rss1, hwm := procMemory(t, pid)
	t.Logf("server memory: %d KiB resident before the attacks, %d KiB after, peak %d KiB", rss0, rss1, hwm)
	if hwm > 64<<10 {
		t.Errorf("server peak resident memory %d KiB, want under 64 MiB", hwm)
	}
	if n := countEvents(cl.events, client.EventSessionDown); n != 0 {
		t.Errorf("the legitimate client's session went down %d times", n)
	}
	if strings.Contains(srv.output(), "panic") {
		t.Error("the server logged a panic")
	}
}

// TestBinaryStrayStreamsBeforeLoginBounded pins an issue 9 finding: before
// login, stray streams were closed but their data stayed buffered, so 8
// connections without a token, each opening 200 streams of 256 KiB, grew
// the server by about 74 MiB. A connection that has not logged in may now
// make the server hold at most mux.UntrustedBytes (docs/security.md).
func TestBinaryStrayStreamsBeforeLoginBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes 400 MB at the server")
	}
	leakCheck(t)
	cfg := writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = "127.0.0.1:0"
token = %q
public_addr = "127.0.0.1"
login_timeout = "5s"
[log]
format = "json"
`, testToken))
	srv := startBinary(t, buildPlainBinary(t), nil, "server", "--config", cfg)
	addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
	pid := srv.cmd.Process.Pid
	_, hwm0 := procMemory(t, pid)
	payload := make([]byte, 256<<10) // one initial stream window
	var wg sync.WaitGroup
	for range 8 {
		s, c := rawYamux(t, addr)
		wg.Go(func() {
			var inner sync.WaitGroup
			for range 200 {
				st, err := s.OpenStream()
				if err != nil {
					break
				}
				inner.Go(func() {
					_ = st.SetWriteDeadline(time.Now().Add(5 * time.Second))
					_, _ = st.Write(payload)
				})
			}
			inner.Wait()
			closedWithin(t, "stray streams before login", c, 10*time.Second)
		})
	}
	wg.Wait()
	_, hwm1 := procMemory(t, pid)
	grew := hwm1 - hwm0
	t.Logf("server peak resident memory: %d KiB before, %d KiB after 8 connections x 200 stray streams (+%d KiB)", hwm0, hwm1, grew)
	if grew > 4<<10 {
		t.Errorf("peak resident memory grew %d KiB, want under 4 MiB for 8 connections that never logged in", grew)
	}
}
