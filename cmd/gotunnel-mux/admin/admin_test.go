package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.uber.org/goleak"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serverStatus() server.Status {
	return server.Status{Started: time.Now(), Listening: []string{"127.0.0.1:7000"}, Clients: []server.ClientStatus{{
		Name: "laptop", Remote: "127.0.0.1:5000", SessionID: "s1", Since: time.Now(), Transport: "tcp",
		HeartbeatRTT: 1500 * time.Microsecond, BandwidthLimit: 50 << 20, OwnToken: true, MaxMappings: 4,
		Mappings: []server.MappingStatus{
			{Name: "ssh", RemotePort: 2222, LocalAddr: "127.0.0.1:22", State: server.StateUp, Active: 2, Visitors: 7, Denied: 3, BytesIn: 100, BytesOut: 5000,
				BandwidthLimit: 1 << 20, LimitWaitIn: 1500 * time.Millisecond, LimitWaitOut: 250 * time.Millisecond},
			{Name: "web", RemotePort: 80, LocalAddr: "127.0.0.1:8080", State: server.StateRefused, Code: control.CodePortNotAllowed, Reason: "port 80 is outside allow_ports"},
		},
	}}}
}

// TestMetricsFollowNamingRules: every metric of both sides passes
// client_golang's linter (Prometheus naming rules, units, help).
func TestMetricsFollowNamingRules(t *testing.T) {
	sm := NewServerMetrics("v1.2.3", serverStatus)
	sm.Login(0)
	sm.Login(control.CodeBadToken)
	sm.Refused(control.CodePortNotAllowed)
	sm.StreamOpened(3 * time.Millisecond)
	sm.HeartbeatRTT(time.Millisecond)
	cm := NewClientMetrics("v1.2.3", func() client.Status {
		return client.Status{Mappings: []client.MappingStatus{{Name: "ssh", State: client.StatePending},
			{Name: "web", State: client.StateUp, BandwidthLimit: 10 << 20, LimitWaitOut: 2 * time.Second}}}
	})
	cm.Reconnect()
	for side, problems := range map[string][]promlint.Problem{
		"server": mustLint(t, sm.Registry), "client": mustLint(t, cm.Registry),
	} {
		for _, p := range problems {
			t.Errorf("%s: %s: %s", side, p.Metric, p.Text)
		}
	}
	want := `
# HELP gotunnel_visitor_bytes_total Bytes from visitors (in) and to visitors (out), counted as they flow.
# TYPE gotunnel_visitor_bytes_total counter
gotunnel_visitor_bytes_total{client="laptop",direction="in",mapping="ssh"} 100
gotunnel_visitor_bytes_total{client="laptop",direction="out",mapping="ssh"} 5000
# HELP gotunnel_visitor_denied_total Visitors reset at the door by allow_ips or deny_ips, the server's or the mapping's.
# TYPE gotunnel_visitor_denied_total counter
gotunnel_visitor_denied_total{client="laptop",mapping="ssh"} 3
# HELP gotunnel_mappings Mappings by state (up, offline, draining, refused, pending).
# TYPE gotunnel_mappings gauge
gotunnel_mappings{state="draining"} 0
gotunnel_mappings{state="offline"} 0
gotunnel_mappings{state="pending"} 0
gotunnel_mappings{state="refused"} 1
gotunnel_mappings{state="up"} 1
# HELP gotunnel_logins_total Logins answered, by result (ok or refused) and code (0 for ok).
# TYPE gotunnel_logins_total counter
gotunnel_logins_total{code="0",result="ok"} 1
gotunnel_logins_total{code="1002",result="refused"} 1
`
	if err := testutil.GatherAndCompare(sm.Registry, strings.NewReader(want),
		"gotunnel_visitor_bytes_total", "gotunnel_visitor_denied_total", "gotunnel_mappings", "gotunnel_logins_total"); err != nil {
		t.Error(err)
	}
}

// TestLimitMetrics: each mapping's bandwidth limit (0 for none), the
// client's max_bandwidth_per_client, and the time limits held bytes
// back, on both sides; a refused mapping has no series.
func TestLimitMetrics(t *testing.T) {
	sm := NewServerMetrics("v1.2.3", serverStatus)
	want := `
# HELP gotunnel_client_bandwidth_limit_bytes_per_second The max_bandwidth_per_client in force for a client's new visitor connections, bytes a second in each direction over all its mappings; 0: none.
# TYPE gotunnel_client_bandwidth_limit_bytes_per_second gauge
gotunnel_client_bandwidth_limit_bytes_per_second{client="laptop"} 5.2428800e+07
# HELP gotunnel_mapping_bandwidth_limit_bytes_per_second Each mapping's own bandwidth_limit, bytes a second in each direction; 0: none.
# TYPE gotunnel_mapping_bandwidth_limit_bytes_per_second gauge
gotunnel_mapping_bandwidth_limit_bytes_per_second{client="laptop",mapping="ssh"} 1.048576e+06
# HELP gotunnel_visitor_limit_wait_seconds_total Time the bytes from visitors (in) and to visitors (out) were held back by a bandwidth limit, summed over the mapping's connections; it grows only while a limit bites.
# TYPE gotunnel_visitor_limit_wait_seconds_total counter
gotunnel_visitor_limit_wait_seconds_total{client="laptop",direction="in",mapping="ssh"} 1.5
gotunnel_visitor_limit_wait_seconds_total{client="laptop",direction="out",mapping="ssh"} 0.25
`
	if err := testutil.GatherAndCompare(sm.Registry, strings.NewReader(want), "gotunnel_client_bandwidth_limit_bytes_per_second",
		"gotunnel_mapping_bandwidth_limit_bytes_per_second", "gotunnel_visitor_limit_wait_seconds_total"); err != nil {
		t.Error(err)
	}
	cm := NewClientMetrics("v1.2.3", func() client.Status {
		return client.Status{Mappings: []client.MappingStatus{{Name: "ssh", State: client.StateUp},
			{Name: "web", State: client.StateUp, BandwidthLimit: 10 << 20, LimitWaitOut: 2 * time.Second}}}
	})
	want = `
# HELP gotunnel_mapping_bandwidth_limit_bytes_per_second Each mapping's own bandwidth_limit, bytes a second in each direction; 0: none.
# TYPE gotunnel_mapping_bandwidth_limit_bytes_per_second gauge
gotunnel_mapping_bandwidth_limit_bytes_per_second{mapping="ssh"} 0
gotunnel_mapping_bandwidth_limit_bytes_per_second{mapping="web"} 1.048576e+07
# HELP gotunnel_visitor_limit_wait_seconds_total Time the bytes from visitors (in) and to visitors (out) were held back by a bandwidth limit, summed over the mapping's connections; it grows only while a limit bites.
# TYPE gotunnel_visitor_limit_wait_seconds_total counter
gotunnel_visitor_limit_wait_seconds_total{direction="in",mapping="ssh"} 0
gotunnel_visitor_limit_wait_seconds_total{direction="in",mapping="web"} 0
gotunnel_visitor_limit_wait_seconds_total{direction="out",mapping="ssh"} 0
gotunnel_visitor_limit_wait_seconds_total{direction="out",mapping="web"} 2
`
	if err := testutil.GatherAndCompare(cm.Registry, strings.NewReader(want),
		"gotunnel_mapping_bandwidth_limit_bytes_per_second", "gotunnel_visitor_limit_wait_seconds_total"); err != nil {
		t.Error(err)
	}
}

func mustLint(t *testing.T, g prometheus.Gatherer) []promlint.Problem {
	t.Helper()
	problems, err := testutil.GatherAndLint(g)
	if err != nil {
		t.Fatal(err)
	}
	return problems
}

// startAPI serves o on a loopback port for the test.
func startAPI(t *testing.T, o Options) string {
	t.Helper()
	o.Addr = "127.0.0.1:0"
	if o.Registry == nil {
		o.Registry = NewServerMetrics("test", serverStatus).Registry
	}
	if o.Status == nil {
		o.Status = func() any { return NewServerDoc("test", serverStatus()) }
	}
	if o.Ready == nil {
		o.Ready = func() error { return nil }
	}
	a, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve() }()
	t.Cleanup(func() {
		_ = a.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return a.URL()
}

func get(t *testing.T, method, url, token string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

// TestTokenIsRequired: with a token, every endpoint but the probes and
// the page itself answers 401 without it or with a wrong one.
func TestTokenIsRequired(t *testing.T) {
	const token = "s3cret-admin-token"
	base := startAPI(t, Options{Token: token, Reload: func() error { return nil }})
	for _, tc := range []struct {
		method, path string
		open         bool
	}{
		{"GET", "/healthz", true}, {"GET", "/readyz", true}, {"GET", "/", true},
		{"GET", "/metrics", false}, {"GET", "/api/v1/status", false}, {"POST", "/api/v1/reload", false},
	} {
		for _, tok := range []string{"", "wrong", token} {
			code, body, hdr := get(t, tc.method, base+tc.path, tok)
			want := http.StatusOK
			if !tc.open && tok != token {
				want = http.StatusUnauthorized
			}
			if code != want {
				t.Errorf("%s %s with token %q = %d, want %d", tc.method, tc.path, tok, code, want)
			}
			if code == http.StatusUnauthorized && (hdr.Get("WWW-Authenticate") == "" || strings.Contains(body, token)) {
				t.Errorf("%s %s: a 401 without WWW-Authenticate, or naming the token: %q", tc.method, tc.path, body)
			}
		}
	}
}

// TestReadyz: 200 when ready, 503 with the reason otherwise.
func TestReadyz(t *testing.T) {
	var why error
	base := startAPI(t, Options{Ready: func() error { return why }})
	if code, body, _ := get(t, "GET", base+"/readyz", ""); code != 200 || body != "ready\n" {
		t.Errorf("ready: %d %q", code, body)
	}
	why = errors.Join(errors.New("mapping web: not registered yet"), errors.New("mapping ssh: not registered yet"))
	code, body, _ := get(t, "GET", base+"/readyz", "")
	if code != 503 || body != "not ready: mapping web: not registered yet; mapping ssh: not registered yet\n" {
		t.Errorf("not ready: %d %q", code, body)
	}
}

// TestStatusDocument: the server's document as docs/operations.md gives it.
func TestStatusDocument(t *testing.T) {
	base := startAPI(t, Options{})
	code, body, hdr := get(t, "GET", base+"/api/v1/status", "")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status: %d %s", code, hdr.Get("Content-Type"))
	}
	var doc ServerDoc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	c := doc.Clients[0]
	if doc.Role != "server" || c.Name != "laptop" || c.HeartbeatRTTMs != 1.5 || len(c.Mappings) != 2 ||
		c.Mappings[0].BytesOut != 5000 || c.Mappings[1].Code != 1003 {
		t.Errorf("document = %s", body)
	}
	for _, key := range []string{`"role"`, `"listening"`, `"clients"`, `"session_id"`, `"heartbeat_rtt_ms"`, `"remote_port"`, `"local_addr"`, `"state"`, `"active"`, `"visitors"`, `"bytes_in"`, `"bytes_out"`} {
		if !strings.Contains(body, key) {
			t.Errorf("document has no %s key: %s", key, body)
		}
	}
}

// TestReload: a failed reload is a 422 with its error; without a Reload
// the endpoint does not exist.
func TestReload(t *testing.T) {
	base := startAPI(t, Options{Reload: func() error { return errors.New("client.toml:3: mappings[0].local_addr: bad address") }})
	code, body, _ := get(t, "POST", base+"/api/v1/reload", "")
	var res ReloadResult
	if code != 422 || json.Unmarshal([]byte(body), &res) != nil || res.Status != "fail" || !strings.Contains(res.Error, "client.toml:3") {
		t.Errorf("reload = %d %q", code, body)
	}
	none := startAPI(t, Options{})
	if code, _, _ := get(t, "POST", none+"/api/v1/reload", ""); code != 404 {
		t.Errorf("reload without Reload = %d, want 404", code)
	}
}

// TestDashboardIsSelfContained: the page loads nothing from elsewhere.
func TestDashboardIsSelfContained(t *testing.T) {
	base := startAPI(t, Options{})
	code, body, hdr := get(t, "GET", base+"/", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("page: %d %v", code, hdr)
	}
	own := strings.ReplaceAll(body, `"http://www.w3.org/2000/svg"`, "") // a name, never fetched
	for _, ext := range []string{"http://", "https://", "//cdn", "<link", `src="`, "@import"} {
		if strings.Contains(own, ext) {
			t.Errorf("the page refers to something outside it (%q)", ext)
		}
	}
	if code, _, _ := get(t, "GET", base+"/nothing", ""); code != 404 {
		t.Errorf("GET /nothing = %d, want 404", code)
	}
}

// TestServerDocDenied: the status document carries each mapping's
// visitors denied by allow_ips or deny_ips, and leaves the field out at 0.
func TestServerDocDenied(t *testing.T) {
	doc := NewServerDoc("test", serverStatus())
	b, err := json.Marshal(doc.Clients[0].Mappings)
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(b, &rows); err != nil {
		t.Fatal(err)
	}
	if got := rows[0]["denied"]; got != float64(3) {
		t.Errorf("mapping ssh: denied = %v, want 3 in %s", got, b)
	}
	if _, ok := rows[1]["denied"]; ok {
		t.Errorf("mapping web: denied present at 0 in %s", b)
	}
}

// TestServerDocLimits: the status document carries the policy in force
// for each client (max_bandwidth_per_client, its own token, its mapping
// limit) and each mapping's time held back by a limit, which is left
// out at 0.
func TestServerDocLimits(t *testing.T) {
	b, err := json.Marshal(NewServerDoc("test", serverStatus()).Clients[0])
	if err != nil {
		t.Fatal(err)
	}
	var row struct {
		BandwidthLimit float64          `json:"bandwidth_limit"`
		OwnToken       bool             `json:"own_token"`
		MaxMappings    int              `json:"max_mappings"`
		Mappings       []map[string]any `json:"mappings"`
	}
	if err := json.Unmarshal(b, &row); err != nil {
		t.Fatal(err)
	}
	if row.BandwidthLimit != 50<<20 || !row.OwnToken || row.MaxMappings != 4 {
		t.Errorf("client row = %s, want bandwidth_limit %d, own_token, max_mappings 4", b, 50<<20)
	}
	if ssh := row.Mappings[0]; ssh["limit_wait_in_ms"] != 1500.0 || ssh["limit_wait_out_ms"] != 250.0 || ssh["bandwidth_limit"] != float64(1<<20) {
		t.Errorf("mapping ssh = %v, want limit_wait_in_ms 1500, limit_wait_out_ms 250, bandwidth_limit %d", ssh, 1<<20)
	}
	for _, key := range []string{"limit_wait_in_ms", "limit_wait_out_ms", "bandwidth_limit"} {
		if _, ok := row.Mappings[1][key]; ok {
			t.Errorf("mapping web: %s present at 0 in %s", key, b)
		}
	}
}

// TestUDPAndServersMetrics: a UDP mapping's dropped datagrams on both
// sides (no series for a TCP mapping), and a client's session with each of
// its servers.
func TestUDPAndServersMetrics(t *testing.T) {
	sm := NewServerMetrics("v1.2.3", func() server.Status {
		return server.Status{Clients: []server.ClientStatus{{Name: "edge", Mappings: []server.MappingStatus{
			{Name: "dns", State: server.StateUp, Protocol: "udp", DatagramsDropped: 7},
			{Name: "ssh", State: server.StateUp, Protocol: "tcp"}}}}}
	})
	want := `
# HELP gotunnel_udp_datagrams_dropped_total ` + droppedHelp + `
# TYPE gotunnel_udp_datagrams_dropped_total counter
gotunnel_udp_datagrams_dropped_total{client="edge",mapping="dns"} 7
`
	if err := testutil.GatherAndCompare(sm.Registry, strings.NewReader(want), "gotunnel_udp_datagrams_dropped_total"); err != nil {
		t.Error(err)
	}
	cm := NewClientMetrics("v1.2.3", func() client.Status {
		return client.Status{Mappings: []client.MappingStatus{{Name: "dns", State: client.StateUp, Protocol: "udp", DatagramsDropped: 2}},
			Servers: []client.ServerStatus{{Addr: "a.example:7000", Session: &client.SessionStatus{Server: "a.example:7000"}}, {Addr: "b.example:7000"}}}
	})
	want = `
# HELP gotunnel_sessions Logged-in sessions: clients on the server; on the client its sessions with its servers (0 or 1 with one server).
# TYPE gotunnel_sessions gauge
gotunnel_sessions 1
# HELP gotunnel_server_session Client: 1 while logged in to this server, else 0; one series per server of server_addrs.
# TYPE gotunnel_server_session gauge
gotunnel_server_session{server="a.example:7000"} 1
gotunnel_server_session{server="b.example:7000"} 0
# HELP gotunnel_udp_datagrams_dropped_total ` + droppedHelp + `
# TYPE gotunnel_udp_datagrams_dropped_total counter
gotunnel_udp_datagrams_dropped_total{mapping="dns"} 2
`
	if err := testutil.GatherAndCompare(cm.Registry, strings.NewReader(want), "gotunnel_sessions", "gotunnel_server_session",
		"gotunnel_udp_datagrams_dropped_total"); err != nil {
		t.Error(err)
	}
	for _, p := range append(mustLint(t, sm.Registry), mustLint(t, cm.Registry)...) {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	doc := NewClientDoc("v1.2.3", cm.status())
	if len(doc.Servers) != 2 || doc.Servers[0].Session == nil || doc.Servers[1].Session != nil || doc.Mappings[0].Protocol != "udp" || doc.Mappings[0].DatagramsDropped != 2 {
		t.Errorf("client document %+v", doc)
	}
}
