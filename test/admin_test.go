package test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// httpGet GETs url with a bearer token ("" for none).
func httpGet(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

// scrape reads /metrics into "name{label=value,...}" -> value, labels
// sorted; a histogram gives name_count.
func scrape(t *testing.T, base, token string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, base+"/metrics", token)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.Counter.GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.Gauge.GetValue()
			case dto.MetricType_HISTOGRAM:
				out[strings.Replace(key, name, name+"_count", 1)] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// poll is pollFor, failing the test when cond does not come to hold.
func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := pollFor(within, cond); err != nil {
		t.Fatalf("%s: not within %s", what, within)
	}
}

// TestAdminAPI drives both binaries with an [admin] table: the metrics
// move while a download runs (its bytes show in a scrape before it
// ends), the status document and `gotunnel-mux status` show the mapping,
// a refused mapping and a refused login are counted, the token is
// enforced and never logged, and the client's /readyz flips when the
// server goes away and comes back.
func TestAdminAPI(t *testing.T) {
	leakCheck(t)
	const token = "binary-admin-test-token-42"
	const adminToken = "scrape-token-0123456789abcdef"
	serverFile := func(bind string) string {
		return writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = %q
token = %q
public_addr = "127.0.0.1"
heartbeat_check_interval = "200ms"
[admin]
addr = "127.0.0.1:0"
token = %q
[log]
format = "json"
`, bind, token, adminToken))
	}
	srv := startProc(t, nil, "server", "--config", serverFile("127.0.0.1:0"))
	lines := waitLogs(t, srv, map[string]func(map[string]any) bool{"listening": msgIs("server listening"), "admin": msgIs("admin api listening")})
	addr, sAdmin := lines["listening"]["addr"].(string), lines["admin"]["addr"].(string)

	const size = 64 << 20
	sent := make(chan [32]byte, 1)
	be := startBackend(t, func(c net.Conn) {
		if sum, err := stream(c, 9, size); err == nil {
			sent <- sum
		}
		_ = c.(*net.TCPConn).CloseWrite()
	})
	cli := startProc(t, nil, "client", "--config", writeFile(t, "client.toml", fmt.Sprintf(`
server_addr = %q
token = %q
name = "metered"
heartbeat_interval = "100ms"
[reconnect]
min = "100ms"
max = "300ms"
[admin]
addr = ":0"
[log]
format = "json"
[[mappings]]
name = "src"
local_addr = %q
health_check = false
[[mappings]]
name = "low"
local_addr = %q
remote_port = 80
health_check = false
`, addr, token, be.addr, be.addr)))
	lines = waitLogs(t, cli, map[string]func(map[string]any) bool{
		"admin": msgIs("admin api listening"),
		"up": func(m map[string]any) bool {
			msg, _ := m["msg"].(string)
			return m["mapping"] == "src" && strings.HasPrefix(msg, "src  tcp://")
		},
		"refused": func(m map[string]any) bool { return m["msg"] == "mapping refused" && m["mapping"] == "low" },
	})
	cAdmin, port := lines["admin"]["addr"].(string), int(lines["up"]["remote_port"].(float64))
	if !strings.HasPrefix(cAdmin, "http://127.0.0.1:") {
		t.Errorf("client admin at %s, want loopback for addr \":0\"", cAdmin)
	}

	// The token is enforced on the server's API; the probes are open.
	if code, _ := httpGet(t, sAdmin+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /metrics without the token = %d, want 401", code)
	}
	if code, _ := httpGet(t, sAdmin+"/api/v1/status", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/status with a wrong token = %d, want 401", code)
	}
	if code, body := httpGet(t, sAdmin+"/healthz", ""); code != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz = %d %q", code, body)
	}

	// A download: 8 MiB read, then the visitor pauses with the rest
	// still to come.
	v := dialPort(t, port)
	h := sha256.New()
	if _, err := io.CopyN(h, v, 8<<20); err != nil {
		t.Fatal(err)
	}
	srvKey := func(name, labels string) string { return name + "{client=metered," + labels + "}" }
	var sm map[string]float64
	poll(t, 10*time.Second, "server metrics during the download", func() bool {
		sm = scrape(t, sAdmin, adminToken)
		return sm["gotunnel_heartbeat_rtt_seconds_count"] >= 1
	})
	for _, c := range []struct {
		key    string
		lo, hi float64
	}{
		{srvKey("gotunnel_visitor_bytes_total", "direction=out,mapping=src"), 8 << 20, size - 1},
		{srvKey("gotunnel_visitor_bytes_total", "direction=in,mapping=src"), 0, 0},
		{srvKey("gotunnel_visitor_connections", "mapping=src"), 1, 1},
		{srvKey("gotunnel_visitor_connections_total", "mapping=src"), 1, 1},
		{"gotunnel_sessions", 1, 1},
		{"gotunnel_mappings{state=up}", 1, 1},
		{"gotunnel_mappings{state=refused}", 1, 1},
		{"gotunnel_logins_total{code=0,result=ok}", 1, 1},
		{"gotunnel_refusals_total{code=1003}", 1, 1},
		{"gotunnel_stream_open_seconds_count", 1, 1},
		{"gotunnel_build_info{version=dev}", 1, 1},
	} {
		if got, ok := sm[c.key]; !ok || got < c.lo || got > c.hi {
			t.Errorf("server %s = %v (present %v), want %v..%v", c.key, got, ok, c.lo, c.hi)
		}
	}
	var cm map[string]float64
	poll(t, 10*time.Second, "client metrics during the download", func() bool {
		cm = scrape(t, cAdmin, "")
		return cm["gotunnel_heartbeat_rtt_seconds_count"] >= 1
	})
	for _, c := range []struct {
		key    string
		lo, hi float64
	}{
		{"gotunnel_visitor_bytes_total{direction=out,mapping=src}", 8 << 20, size - 1},
		{"gotunnel_visitor_connections{mapping=src}", 1, 1},
		{"gotunnel_sessions", 1, 1},
		{"gotunnel_mappings{state=refused}", 1, 1},
		{"gotunnel_logins_total{code=0,result=ok}", 1, 1},
		{"gotunnel_refusals_total{code=1003}", 1, 1},
		{"gotunnel_reconnects_total", 0, 0},
		{"gotunnel_stream_open_seconds_count", 1, 1},
	} {
		if got, ok := cm[c.key]; !ok || got < c.lo || got > c.hi {
			t.Errorf("client %s = %v (present %v), want %v..%v", c.key, got, ok, c.lo, c.hi)
		}
	}

	// The status document and the status command, mid-transfer.
	code, body := httpGet(t, sAdmin+"/api/v1/status", adminToken)
	var doc struct {
		Role    string `json:"role"`
		Clients []struct {
			Name           string  `json:"name"`
			Transport      string  `json:"transport"`
			HeartbeatRTTMs float64 `json:"heartbeat_rtt_ms"`
			Mappings       []struct {
				Name       string `json:"name"`
				RemotePort int    `json:"remote_port"`
				State      string `json:"state"`
				Code       int    `json:"code"`
				Active     int    `json:"active"`
				BytesOut   int64  `json:"bytes_out"`
			} `json:"mappings"`
		} `json:"clients"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &doc) != nil || doc.Role != "server" || len(doc.Clients) != 1 {
		t.Fatalf("status = %d %s", code, body)
	}
	c := doc.Clients[0]
	if c.Name != "metered" || c.Transport != "tcp" || c.HeartbeatRTTMs <= 0 || len(c.Mappings) != 2 ||
		c.Mappings[0].Name != "low" || c.Mappings[0].State != "refused" || c.Mappings[0].Code != 1003 ||
		c.Mappings[1].Name != "src" || c.Mappings[1].State != "up" || c.Mappings[1].RemotePort != port ||
		c.Mappings[1].Active != 1 || c.Mappings[1].BytesOut < 8<<20 {
		t.Errorf("status document = %s", body)
	}
	out, err := exec.Command(buildBinary(t), "status", "--admin", sAdmin, "--token", adminToken).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "metered") || !regexp.MustCompile(`src\s+\d+\s+\S+\s+up\s+1\s`).Match(out) {
		t.Errorf("gotunnel-mux status: %v\n%s", err, out)
	}
	out, err = exec.Command(buildBinary(t), "status", "--admin", sAdmin).CombinedOutput()
	if exitOf(err) != 1 || !strings.Contains(string(out), "401") {
		t.Errorf("gotunnel-mux status without the token: exit %d\n%s", exitOf(err), out)
	}

	// The rest of the download, intact; then the gauge is back at 0.
	if _, err := io.Copy(h, v); err != nil {
		t.Fatal(err)
	}
	_ = v.Close()
	if got, want := [32]byte(h.Sum(nil)), <-sent; got != want {
		t.Fatal("the download arrived corrupted")
	}
	poll(t, 10*time.Second, "visitor gauge back at 0", func() bool {
		sm = scrape(t, sAdmin, adminToken)
		return sm[srvKey("gotunnel_visitor_connections", "mapping=src")] == 0
	})
	if got := sm[srvKey("gotunnel_visitor_bytes_total", "direction=out,mapping=src")]; got != size {
		t.Errorf("bytes out after the download = %v, want %d", got, size)
	}

	// A refused login is counted with its code.
	wrong := startProc(t, []string{"GOTUNNEL_TOKEN="}, "client", "--server", addr, "--token", "not-the-token", "--map", "x=0:"+be.addr)
	if code := wrong.exitCode(t, 15*time.Second); code != 3 {
		t.Errorf("client with a wrong token exited %d, want 3", code)
	}
	if got := scrape(t, sAdmin, adminToken)["gotunnel_logins_total{code=1002,result=refused}"]; got != 1 {
		t.Errorf("refused logins = %v, want 1", got)
	}

	// /readyz on the client flips when the server goes away and back.
	ready := func(want int) func() bool {
		return func() bool { code, _ := httpGet(t, cAdmin+"/readyz", ""); return code == want }
	}
	poll(t, 10*time.Second, "client ready", ready(http.StatusOK))
	_ = srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	poll(t, 15*time.Second, "client not ready once the server is gone", ready(http.StatusServiceUnavailable))
	if _, body := httpGet(t, cAdmin+"/readyz", ""); !strings.Contains(string(body), "not logged in") {
		t.Errorf("client /readyz while the server is down: %q", body)
	}
	srv2 := startProc(t, nil, "server", "--config", serverFile(addr))
	srv2.waitLog(t, "server listening again", msgIs("server listening"))
	poll(t, 15*time.Second, "client ready again", ready(http.StatusOK))
	if got := scrape(t, cAdmin, "")["gotunnel_reconnects_total"]; got < 1 {
		t.Errorf("reconnects = %v, want at least 1", got)
	}

	stopBoth(t, cli, srv2)
	for name, p := range map[string]*proc{"server": srv, "client": cli, "server again": srv2} {
		if o := p.output(); strings.Contains(o, adminToken) || strings.Contains(o, token) {
			t.Errorf("the %s logged a token", name)
		}
	}
}
