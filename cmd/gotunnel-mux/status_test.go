package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/cmd/gotunnel-mux/admin"
)

// TestRenderStatus: both documents drawn as tables, a row per mapping,
// the refusal in words, bytes in binary units.
func TestRenderStatus(t *testing.T) {
	now := time.Now()
	srv, _ := json.Marshal(admin.ServerDoc{Role: "server", Version: "v9", Started: now, Listening: []string{"0.0.0.0:7000"},
		Clients: []admin.ClientRow{{Name: "laptop", Remote: "203.0.113.7:5000", SessionID: "abc", Since: now, Transport: "tls", HeartbeatRTTMs: 2.5,
			BandwidthLimit: 50 << 20, OwnToken: true, MaxMappings: 4,
			Mappings: []admin.MappingRow{
				{Name: "ssh", RemotePort: 10022, LocalAddr: "127.0.0.1:22", State: "up", Active: 1, Visitors: 3, BytesIn: 2048, BytesOut: 5 << 20,
					Denied: 7, BandwidthLimit: 10 << 20, LimitWaitInMs: 1200, LimitWaitOutMs: 2000.5},
				{Name: "web", RemotePort: 80, LocalAddr: "127.0.0.1:80", State: "refused", Code: 1003, Reason: "port 80 is outside allow_ports"},
			}}}})
	cli, _ := json.Marshal(admin.ClientDoc{Role: "client", Version: "v9", Started: now, Server: "tunnel:7000", Reconnects: 2,
		LastError: "dial tcp: connection refused", Mappings: []admin.MappingRow{{Name: "ssh", LocalAddr: "127.0.0.1:22", State: "pending"},
			{Name: "web", LocalAddr: "127.0.0.1:80", BoundPort: 18080, State: "up", BandwidthLimit: 1 << 20, LimitWaitOutMs: 750},
			{Name: "dns", LocalAddr: "127.0.0.1:53", BoundPort: 5353, State: "up", Protocol: "udp"}},
		Servers: []admin.ServerRow{{Server: "tunnel:7000", Reconnects: 2, LastError: "dial tcp: connection refused",
			Mappings: []admin.MappingOnRow{{Name: "ssh", State: "pending"}, {Name: "web", State: "pending"}, {Name: "dns", State: "pending"}}},
			{Server: "tunnel-b:7000", Session: &admin.SessionRow{Server: "tunnel-b:7000", ID: "s2", Since: now, HeartbeatRTTMs: 1.5},
				Mappings: []admin.MappingOnRow{{Name: "ssh", State: "refused", Code: 1004}, {Name: "web", State: "up", BoundPort: 18080},
					{Name: "dns", State: "up", BoundPort: 5353}}}}})
	for _, tc := range []struct {
		doc  []byte
		want []string
	}{
		{srv, []string{`gotunnel-mux server v9, up 0s, listening on 0.0.0.0:7000, 1 client\(s\)`,
			`laptop\s+ssh\s+10022\s+127\.0\.0\.1:22\s+up\s+1\s+3\s+2\.0 KiB\s+5\.0 MiB\s+7\s+10\.0 MiB/s\s+3\.2s\n`,
			`laptop\s+web\s+80\s+127\.0\.0\.1:80\s+refused \(1003 port 80 is outside allow_ports\)\s+0\s+0\s+0 B\s+0 B\s+0\s+-\s+-\n`,
			`laptop\s+203\.0\.113\.7:5000\s+tls\s+2\.5ms\s+0s\s+own\s+4\s+50\.0 MiB/s\s+abc\n`}},
		{cli, []string{`server tunnel:7000: not connected: dial tcp: connection refused; 2 reconnect\(s\)`,
			`ssh\s+-\s+127\.0\.0\.1:22\s+pending\s+0\s+0\s+0 B\s+0 B\s+-\s+-\n`,
			`web\s+18080\s+127\.0\.0\.1:80\s+up\s+0\s+0\s+0 B\s+0 B\s+1\.0 MiB/s\s+750ms\n`,
			`dns\s+5353/udp\s+127\.0\.0\.1:53\s+up\s`,
			`tunnel:7000\s+not connected: dial tcp: connection refused\s+-\s+2\s+ssh pending, web pending, dns pending\n`,
			`tunnel-b:7000\s+s2, up 0s\s+1\.5ms\s+0\s+ssh refused \(1004\), web up :18080, dns up :5353\n`}},
	} {
		var out bytes.Buffer
		if err := renderStatus(&out, tc.doc); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !regexp.MustCompile(w).MatchString(out.String()) {
				t.Errorf("status output lacks %s:\n%s", w, out.String())
			}
		}
	}
	if err := renderStatus(&bytes.Buffer{}, []byte(`{"role":"proxy"}`)); err == nil {
		t.Error("an unknown role drew a table")
	}
}

// TestStatusAndReloadCommands: the commands against a fake API, with the
// token sent, a refused reload's words and exit 2.
func TestStatusAndReloadCommands(t *testing.T) {
	t.Setenv("GOTUNNEL_ADMIN_URL", "")
	t.Setenv("GOTUNNEL_ADMIN_TOKEN", "")
	doc, _ := json.Marshal(admin.ClientDoc{Role: "client", Version: "v9", Server: "s:1", Mappings: []admin.MappingRow{}})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t0k" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/v1/status":
			_, _ = w.Write(doc)
		case "/api/v1/reload":
			w.WriteHeader(http.StatusUnprocessableEntity)
			_ = json.NewEncoder(w).Encode(admin.ReloadResult{Status: "fail", Error: "client.toml:3: x: unknown key"})
		}
	}))
	defer api.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--admin", api.URL, "--token", "t0k"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "server s:1") {
		t.Errorf("status: exit %d, %q %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"status", "--admin", api.URL, "--token", "bad", "--json"}, &out, &errb); code != 1 || !strings.Contains(out.String(), "401") {
		t.Errorf("status with a wrong token: exit %d, %q", code, out.String())
	}
	errb.Reset()
	if code := run([]string{"reload", "--admin", api.URL, "--token", "t0k"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "client.toml:3") {
		t.Errorf("refused reload: exit %d, %q", code, errb.String())
	}
	if code := run([]string{"status"}, &out, &errb); code != 2 {
		t.Errorf("status without an API: exit %d, want 2", code)
	}
}
