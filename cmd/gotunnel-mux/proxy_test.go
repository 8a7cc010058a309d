package main

import (
	"strings"
	"testing"

	"github.com/gotunnel-mux/gotunnel-mux/config"
)

func TestClientProxy(t *testing.T) {
	cases := []struct {
		name     string
		server   string
		proxyURL string
		env      map[string]string
		want     string // redacted proxy URL, "" for none
		err      string
	}{
		{"no proxy anywhere", "tunnel.example.com:7000", "", nil, "", ""},
		{"HTTPS_PROXY", "tunnel.example.com:7000", "", map[string]string{"HTTPS_PROXY": "http://proxy:3128"}, "http://proxy:3128", ""},
		{"lower case", "tunnel.example.com:7000", "", map[string]string{"https_proxy": "http://u:p@proxy:3128"}, "http://u:xxxxx@proxy:3128", ""},
		{"ALL_PROXY socks", "tunnel.example.com:7000", "", map[string]string{"ALL_PROXY": "socks5h://s:1080"}, "socks5://s:1080", ""},
		{"HTTPS_PROXY first", "tunnel.example.com:7000", "", map[string]string{"HTTPS_PROXY": "http://a:1", "ALL_PROXY": "socks5://b:2"}, "http://a:1", ""},
		{"NO_PROXY match", "tunnel.example.com:7000", "", map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, "", ""},
		{"loopback never", "127.0.0.1:7000", "", map[string]string{"HTTPS_PROXY": "http://p:1"}, "", ""},
		{"file wins", "tunnel.example.com:7000", "socks5://f:1080", map[string]string{"HTTPS_PROXY": "http://p:1"}, "socks5://f:1080", ""},
		{"none ignores env", "tunnel.example.com:7000", "none", map[string]string{"HTTPS_PROXY": "http://p:1"}, "", ""},
		{"https proxy refused", "tunnel.example.com:7000", "", map[string]string{"HTTPS_PROXY": "https://u:secret@p:443"}, "", "https proxies are not supported"},
		{"no port", "tunnel.example.com:7000", "", map[string]string{"HTTPS_PROXY": "http://p"}, "", "port is missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.DefaultClient()
			cfg.ServerAddr, cfg.Token, cfg.ProxyURL = tc.server, "t", tc.proxyURL
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			u, err := clientProxy(&cfg, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			got := ""
			if u != nil {
				got = u.Redacted()
			}
			if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("clientProxy = %q, %v; want %q, error containing %q", got, err, tc.want, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows the proxy password: %v", err)
			}
		})
	}
}
