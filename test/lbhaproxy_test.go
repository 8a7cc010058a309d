package test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The server behind a real load balancer: Debian's HAProxy, with
// send-proxy-v2 towards bind_addr and towards a mapping's port.

// haproxyPath is Debian's haproxy, or haproxy on PATH. Without one the
// test skips, unless CI_REQUIRE_HAPROXY=1 (CI sets it), where it fails.
func haproxyPath(t *testing.T) string {
	t.Helper()
	return program(t, "CI_REQUIRE_HAPROXY", "test: haproxy not installed; apt-get install haproxy to run the load balancer test",
		"/usr/sbin/haproxy", "haproxy")
}

// startHAProxy runs haproxy in the foreground with one TCP frontend on
// host (a free port is picked: haproxy takes no port 0) and one backend
// server, upstream, with serverOpts (send-proxy-v2 ...). It returns the
// frontend's address; haproxy is killed when the test ends.
func startHAProxy(t *testing.T, exe, host, upstream, serverOpts string) string {
	t.Helper()
	dir := t.TempDir()
	var err error
	for range 3 { // a port found free may be taken before haproxy binds it
		var addr string
		if addr, err = tryHAProxy(t, exe, dir, host, upstream, serverOpts); err == nil {
			return addr
		}
	}
	t.Fatal(err)
	return ""
}

func tryHAProxy(t *testing.T, exe, dir, host, upstream, serverOpts string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	conf := filepath.Join(dir, "haproxy.cfg")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`global
	maxconn 256
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend front
	bind %s
	default_backend tunnel
backend tunnel
	server gotunnel %s %s
`, addr, upstream, serverOpts)), 0o600)
	if err != nil {
		return "", err
	}
	out := &bytes.Buffer{}
	cmd := exec.Command(exe, "-db", "-f", conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // joined through done
	_, port, _ := net.SplitHostPort(addr)
	tick := time.NewTicker(10 * time.Millisecond) // polling a process we do not control
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for !listening(port) {
		select {
		case <-done:
			return "", fmt.Errorf("haproxy exited: %s", out)
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			return "", fmt.Errorf("haproxy did not listen on %s within 5s: %s", addr, out)
		case <-tick.C:
		}
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("haproxy for %s:\n%s", upstream, out)
		}
	})
	return addr, nil
}

// listening reports whether a socket listens on port (decimal), by the
// kernel's tables: a dial would be a connection through the balancer.
func listening(port string) bool {
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X", p)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" { // TCP_LISTEN
				_ = f.Close()
				return true
			}
		}
		_ = f.Close()
	}
	return false
}

// TestBinaryHAProxy: HAProxy with send-proxy-v2 in front of bind_addr
// (the client dials it on ::1, HAProxy dials the server from 127.0.0.1)
// and in front of a mapping's port, with health checks that send the
// LOCAL command (check-send-proxy) on both. The server logs the
// client's own address; an 8 MiB download by a visitor from 127.0.0.2
// arrives intact, the local service's header and the access log name
// that visitor; the mapping's health checks pass the door (they reach the
// local service under the balancer's own address), bind_addr's are not
// logged as failed logins, and no header is refused.
func TestBinaryHAProxy(t *testing.T) {
	exe := haproxyPath(t)
	leakCheck(t)
	srv := startProc(t, []string{"GOTUNNEL_TOKEN="}, "server", "--config",
		writeFile(t, "server.toml", fmt.Sprintf(lbServerToml, testToken, "all")))
	bind := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
	front := startHAProxy(t, exe, "::1", bind, "send-proxy-v2 check check-send-proxy inter 100ms")
	svc := startPPService(t)
	cli := startProc(t, []string{"GOTUNNEL_TOKEN="}, "client", "--config",
		writeFile(t, "client.toml", fmt.Sprintf(lbClientToml, front, testToken, svc.addr, svc.addr)))
	web := upPort(t, cli, "web")
	in := waitLogged(t, srv, "client logged in", "client", "lb")
	if remote := in["remote"].(string); !strings.HasPrefix(remote, "[::1]:") {
		t.Errorf("client logged in remote=%s, want the client's own [::1]:port, from HAProxy's header", remote)
	}

	pub := startHAProxy(t, exe, "127.0.0.1", net.JoinHostPort("127.0.0.1", strconv.Itoa(web)),
		"send-proxy-v2 check check-send-proxy inter 100ms")
	_, port, _ := net.SplitHostPort(pub)
	p, _ := strconv.Atoi(port)
	v, err := dialFrom(visitorIn, p)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	getThrough(t, v, 8<<20)
	waitLogged(t, srv, "visitor closed", "mapping", "web", "visitor", v.LocalAddr().String())
	var checks int
	poll(t, 10*time.Second, "the visitor and 3 health checks at the local service", func() bool {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		visitor := false
		checks = 0
		for _, s := range svc.sources {
			visitor = visitor || s == v.LocalAddr().String()
			if strings.HasPrefix(s, "127.0.0.1:") {
				checks++
			}
		}
		return visitor && checks >= 3
	})
	for _, msg := range []string{"visitor reset: no valid PROXY protocol header from a trusted proxy",
		"connection reset: no valid PROXY protocol header from a trusted proxy", "login failed"} {
		if bad := logged(srv, msg); len(bad) > 0 {
			t.Errorf("the server logged %q %d times, first %v; want none: HAProxy's headers and health checks are fine", msg, len(bad), bad[0])
		}
	}
}
