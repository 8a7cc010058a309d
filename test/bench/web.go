package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The small-requests row: a real nginx serving a 1 KiB page, loaded by
// wrk with 64 keep-alive connections, straight and through the tunnel.
// Each request is a few small frames each way, so the row shows what a
// frame costs the tunnel's processes, as a web app behind it feels it.
// Both programs come from Debian's packages (nginx-light, wrk); without
// them the row is skipped with a message.

const (
	webConns    = 64
	webPage     = 1 << 10
	webDuration = 3 * time.Second // at least, per measurement
)

// web is an nginx started for the benchmark.
type web struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startWeb starts nginx in dir, or says why it cannot.
func startWeb(dir string) (*web, error) {
	for _, prog := range []string{"nginx", "wrk"} {
		if _, err := exec.LookPath(prog); err != nil {
			return nil, fmt.Errorf("%s is not installed (apt-get install nginx-light wrk)", prog)
		}
	}
	root := filepath.Join(dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	page := strings.Repeat("x", webPage-1) + "\n"
	if err := os.WriteFile(filepath.Join(root, "page.html"), []byte(page), 0o644); err != nil {
		return nil, err
	}
	var err error
	for range 3 { // nginx takes no port 0: a port found free may be taken before nginx binds it
		var w *web
		if w, err = tryWeb(dir, root); err == nil {
			return w, nil
		}
	}
	return nil, err
}

func tryWeb(dir, root string) (*web, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	conf := filepath.Join(dir, "nginx.conf")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/tmp-body;
	proxy_temp_path %[1]s/tmp-proxy;
	fastcgi_temp_path %[1]s/tmp-fastcgi;
	uwsgi_temp_path %[1]s/tmp-uwsgi;
	scgi_temp_path %[1]s/tmp-scgi;
	keepalive_requests 1000000;
	server {
		listen %[2]s;
		root %[3]s;
	}
}
`, dir, addr, root)), 0o600)
	if err != nil {
		return nil, err
	}
	w := &web{cmd: exec.Command("nginx", "-c", conf, "-p", dir), addr: addr, done: make(chan struct{})}
	out, err := os.Create(filepath.Join(dir, "nginx.out"))
	if err != nil {
		return nil, err
	}
	w.cmd.Stdout, w.cmd.Stderr = out, out
	if err := w.cmd.Start(); err != nil {
		_ = out.Close()
		return nil, err
	}
	go func() { _ = w.cmd.Wait(); _ = out.Close(); close(w.done) }() // joined through done
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-w.done:
			b, _ := os.ReadFile(filepath.Join(dir, "nginx.out"))
			return nil, fmt.Errorf("nginx exited: %s", strings.TrimSpace(string(b)))
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			return w, nil
		}
		time.Sleep(20 * time.Millisecond) // polling for a process we do not control
	}
	w.stop()
	return nil, errors.New("nginx did not listen within 5s")
}

func (w *web) stop() {
	if w == nil {
		return
	}
	_ = w.cmd.Process.Kill()
	<-w.done
}

var (
	wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99  = regexp.MustCompile(`\n\s+99%\s+([0-9.]+)(us|ms|s)\b`)
	wrkBad  = regexp.MustCompile(`Non-2xx or 3xx responses|Socket errors`)
)

// smallRequests loads addr's page with wrk for d and returns requests per
// second and the p99 latency.
func smallRequests(addr string, d time.Duration) (rate float64, p99 time.Duration, err error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(webConns), "-d"+strconv.Itoa(secs)+"s",
		"--latency", "http://"+addr+"/page.html").CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads the rate and p99 out of wrk's report; a report with
// failed requests is an error, not a figure.
func parseWrk(out string) (float64, time.Duration, error) {
	if bad := wrkBad.FindString(out); bad != "" {
		return 0, 0, fmt.Errorf("wrk saw %s:\n%s", strings.ToLower(bad), out)
	}
	m := wrkRate.FindStringSubmatch(out)
	l := wrkP99.FindStringSubmatch(out)
	if m == nil || l == nil {
		return 0, 0, fmt.Errorf("wrk's report has no rate or p99:\n%s", out)
	}
	rate, _ := strconv.ParseFloat(m[1], 64)
	v, _ := strconv.ParseFloat(l[1], 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[l[2]]
	return rate, time.Duration(v * float64(unit)), nil
}
