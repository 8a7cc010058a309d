package test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The PROXY protocol towards the local service, as a user runs it: the
// real server and client binaries in front of a real nginx (Debian's
// nginx-light) that listens with `proxy_protocol` and logs the address
// the header carries.

const (
	ppPage     = 256 << 10 // the page's size
	ppVisitors = 2         // visitors per version, one after the other
	ppProbes   = 3         // health probes nginx must have seen
)

// TestBinaryProxyProtocolNginx: for v1 and v2, visitors fetch a page
// through the tunnel from nginx; nginx's access log names each visitor's
// own address and port ($proxy_protocol_addr:$proxy_protocol_port, and
// $remote_addr:$remote_port through real_ip_header proxy_protocol, as
// docs/transports.md configures it) and the server's public address and
// the mapping's port as the destination; the page arrives intact. The
// client's health probe (every 100 ms here) sends no header: nginx logs
// it at info only ("client closed connection while reading PROXY
// protocol"), never a "broken header" error.
func TestBinaryProxyProtocolNginx(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			leakCheck(t)
			ng := startNginx(t)
			srv := startProc(t, []string{"GOTUNNEL_TOKEN="}, "server", "--config", writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = "127.0.0.1:0"
token = %q
public_addr = "127.0.0.1"

[log]
format = "json"
`, testToken)))
			addr := srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
			cli := startProc(t, []string{"GOTUNNEL_TOKEN="}, "client", "--config", writeFile(t, "client.toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = "pp"

[health]
interval = "100ms"
timeout = "1s"

[log]
format = "json"

[[mappings]]
name = "web"
local_addr = %q
remote_port = 0
proxy_protocol = %q
`, addr, testToken, ng.addr, version)))
			port := upPort(t, cli, "web")
			probesBefore := ng.countError(t, "client closed connection while reading PROXY protocol")

			var visitors []string
			for range ppVisitors {
				visitors = append(visitors, ng.fetch(t, port))
			}
			public := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			lines := ng.waitAccess(t, len(visitors))
			for i, v := range visitors {
				want := fmt.Sprintf("%s %s %s \"GET /page.bin HTTP/1.1\" 200 %d", v, public, v, ppPage)
				if lines[i] != want {
					t.Errorf("nginx access log line %d = %q, want %q (the visitor's own address and port, then the tunnel's public address)", i, lines[i], want)
				}
			}

			ng.waitFor(t, fmt.Sprintf("%d more probes", ppProbes), func() bool {
				return ng.countError(t, "client closed connection while reading PROXY protocol") >= probesBefore+ppProbes
			})
			if bad := ng.errorLines(t, "[error]", "[warn]", "[crit]", "[alert]", "broken header"); len(bad) > 0 {
				t.Errorf("nginx logged, at warn or above:\n%s", strings.Join(bad, "\n"))
			}
		})
	}
}

// nginx is an nginx started for one test, in its own directory.
type nginx struct {
	dir  string
	addr string
	page [32]byte // SHA-256 of /page.bin
	cmd  *exec.Cmd
	done chan struct{}
}

// nginxPath is Debian's nginx (nginx-light) at /usr/sbin/nginx, or nginx
// on PATH. Without one the test skips, unless CI_REQUIRE_NGINX=1 (CI
// sets it), where it fails: CI cannot skip it silently.
func nginxPath(t *testing.T) string {
	t.Helper()
	return program(t, "CI_REQUIRE_NGINX", "test: nginx not installed; apt-get install nginx-light to run the PROXY protocol test",
		"/usr/sbin/nginx", "nginx")
}

// startNginx runs nginx in a t.TempDir() with one server on loopback
// that takes a PROXY header (v1 or v2) on every connection, serves
// /page.bin, logs "proxy_protocol_addr:port
// proxy_protocol_server_addr:port remote_addr:remote_port request status
// bytes" to access.log, and logs errors down to info to error.log. It is
// killed when the test ends.
func startNginx(t *testing.T) *nginx {
	t.Helper()
	exe := nginxPath(t)
	ng := &nginx{dir: t.TempDir()}
	root := filepath.Join(ng.dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	var page bytes.Buffer
	ng.page, _ = stream(&page, 71, ppPage)
	if err := os.WriteFile(filepath.Join(root, "page.bin"), page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	for range 3 { // nginx takes no port 0: a port found free may be taken before nginx binds it
		if err = ng.try(exe, root); err == nil {
			t.Cleanup(ng.stop)
			return ng
		}
	}
	t.Fatal(err)
	return nil
}

func (ng *nginx) try(exe, root string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ng.addr = ln.Addr().String()
	_ = ln.Close()
	_ = os.Remove(filepath.Join(ng.dir, "nginx.pid"))
	conf := filepath.Join(ng.dir, "nginx.conf")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
	log_format pp '$proxy_protocol_addr:$proxy_protocol_port $proxy_protocol_server_addr:$proxy_protocol_server_port '
		'$remote_addr:$remote_port "$request" $status $body_bytes_sent';
	access_log %[1]s/access.log pp;
	client_body_temp_path %[1]s/tmp-body;
	proxy_temp_path %[1]s/tmp-proxy;
	fastcgi_temp_path %[1]s/tmp-fastcgi;
	uwsgi_temp_path %[1]s/tmp-uwsgi;
	scgi_temp_path %[1]s/tmp-scgi;
	server {
		listen %[2]s proxy_protocol;
		set_real_ip_from 127.0.0.1;
		real_ip_header proxy_protocol;
		root %[3]s;
	}
}
`, ng.dir, ng.addr, root)), 0o600)
	if err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(ng.dir, "nginx.out"))
	if err != nil {
		return err
	}
	ng.cmd = exec.Command(exe, "-c", conf, "-p", ng.dir)
	ng.cmd.Stdout, ng.cmd.Stderr = out, out
	if err := ng.cmd.Start(); err != nil {
		_ = out.Close()
		return err
	}
	ng.done = make(chan struct{})
	go func() { _ = ng.cmd.Wait(); _ = out.Close(); close(ng.done) }() // joined through done
	if err := ng.waitListening(); err != nil {
		ng.stop()
		return err
	}
	return nil
}

// waitListening waits until nginx has bound its port: its pid file is
// written after the listening sockets are open. A dial would do too, but
// it would be a connection without a header in the error log.
func (ng *nginx) waitListening() error {
	tick := time.NewTicker(10 * time.Millisecond) // polling a process we do not control
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-ng.done:
			b, _ := os.ReadFile(filepath.Join(ng.dir, "nginx.out"))
			e, _ := os.ReadFile(filepath.Join(ng.dir, "error.log"))
			return fmt.Errorf("nginx exited: %s\n%s", bytes.TrimSpace(b), bytes.TrimSpace(e))
		case <-deadline:
			return fmt.Errorf("nginx wrote no pid file within 5s")
		case <-tick.C:
			if b, err := os.ReadFile(filepath.Join(ng.dir, "nginx.pid")); err == nil && len(bytes.TrimSpace(b)) > 0 {
				return nil
			}
		}
	}
}

func (ng *nginx) stop() {
	_ = ng.cmd.Process.Kill()
	<-ng.done
}

// fetch gets /page.bin through the tunnel's port, checks it arrived
// whole, and returns the visitor's own address, ip:port.
func (ng *nginx) fetch(t *testing.T, port int) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "GET /page.bin HTTP/1.1\r\nHost: tunnel.test\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading nginx's answer through the tunnel: %v", err)
	}
	defer resp.Body.Close()
	n, sum, err := drain(resp.Body)
	switch {
	case err != nil:
		t.Fatalf("reading the page after %d bytes: %v", n, err)
	case resp.StatusCode != http.StatusOK:
		t.Fatalf("nginx answered %s, want 200 OK", resp.Status)
	case n != ppPage || sum != ng.page:
		t.Fatalf("the page arrived as %d bytes, sha256 %x; want %d bytes, sha256 %x", n, sum, ppPage, ng.page)
	}
	return c.LocalAddr().String()
}

// waitAccess waits until the access log has n lines and returns them.
// nginx writes a line once the request is done, which may be just after
// the visitor read the last byte.
func (ng *nginx) waitAccess(t *testing.T, n int) []string {
	t.Helper()
	var lines []string
	ng.waitFor(t, fmt.Sprintf("%d access log lines", n), func() bool {
		b, _ := os.ReadFile(filepath.Join(ng.dir, "access.log"))
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(b) > 0 && len(lines) >= n
	})
	return lines
}

// waitError polls cond, for what nginx writes in its files, for up to 10 s.
func (ng *nginx) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			b, _ := os.ReadFile(filepath.Join(ng.dir, "error.log"))
			a, _ := os.ReadFile(filepath.Join(ng.dir, "access.log"))
			t.Fatalf("nginx: no %s within 10s; access.log:\n%s\nerror.log:\n%s", what, a, b)
		}
	}
}

// errorLines returns the lines of nginx's error log holding any of subs.
func (ng *nginx) errorLines(t *testing.T, subs ...string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ng.dir, "error.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		for _, s := range subs {
			if strings.Contains(line, s) {
				out = append(out, strings.TrimSpace(line))
				break
			}
		}
	}
	return out
}

// countError counts the lines of nginx's error log holding sub.
func (ng *nginx) countError(t *testing.T, sub string) int {
	t.Helper()
	return len(ng.errorLines(t, sub))
}
