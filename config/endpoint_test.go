package config

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	long := "/" + strings.Repeat("p", 255)
	tests := []struct {
		addr string
		tls  bool
		want Endpoint
	}{
		{"tunnel.example.com:7000", false, Endpoint{"tcp", "tunnel.example.com:7000", ""}},
		{"tunnel.example.com:7000", true, Endpoint{"tls", "tunnel.example.com:7000", ""}},
		{"[::1]:7000", false, Endpoint{"tcp", "[::1]:7000", ""}},
		{"tcp://h:7000", false, Endpoint{"tcp", "h:7000", ""}},
		{"tcp://h:7000/", false, Endpoint{"tcp", "h:7000", ""}},
		{"tls://h:443", false, Endpoint{"tls", "h:443", ""}},
		{"tls://h:443", true, Endpoint{"tls", "h:443", ""}},
		{"tls://[2001:db8::1]:443", false, Endpoint{"tls", "[2001:db8::1]:443", ""}},
		{"ws://[::1]:8080/x", false, Endpoint{"ws", "[::1]:8080", "/x"}},
		{"ws://h:80", false, Endpoint{"ws", "h:80", DefaultWSPath}},
		{"ws://h:80/", false, Endpoint{"ws", "h:80", "/gotunnel"}},
		{"wss://h:443", true, Endpoint{"wss", "h:443", "/gotunnel"}},
		{"wss://tunnel.example.com:443/a/b/", false, Endpoint{"wss", "tunnel.example.com:443", "/a/b/"}},
		{"wss://h:443/a%20b", false, Endpoint{"wss", "h:443", "/a b"}},
		{"wss://h:443/a@b", false, Endpoint{"wss", "h:443", "/a@b"}},
		{"wss://h:443" + long, false, Endpoint{"wss", "h:443", long}},
		{"WSS://Tunnel.Example.com:443/X", false, Endpoint{"wss", "Tunnel.Example.com:443", "/X"}},
		{"Tcp://h:1", false, Endpoint{"tcp", "h:1", ""}},
		{"TLS://10.0.0.1:65535", false, Endpoint{"tls", "10.0.0.1:65535", ""}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s,tls=%v", tt.addr, tt.tls), func(t *testing.T) {
			got, err := ParseEndpoint(tt.addr, tt.tls)
			if err != nil || got != tt.want {
				t.Errorf("ParseEndpoint(%q, %v) = %+v, %v; want %+v", tt.addr, tt.tls, got, err, tt.want)
			}
		})
	}
}

func TestParseEndpointErrors(t *testing.T) {
	tests := []struct {
		addr string
		tls  bool
		want string // the whole message
	}{
		{"tunnel.example.com", false, `bad address "tunnel.example.com": want host:port, such as "127.0.0.1:22" or "[::1]:22"`},
		{":7000", false, `bad address ":7000": the host is missing`},
		{"h:0", false, `bad address "h:0": want a port number 1..65535`},
		{"bob:pw@h:1", false, `bad address "bob:xxxxx@h:1": user info (user@ or user:password@) is not allowed; the client logs in with its token`},
		{"tcp://h:1", true, `bad address "tcp://h:1": [tls] enabled = true, but tcp:// and ws:// are plain; use tls:// or wss://, or set [tls] enabled = false`},
		{"ws://h:1/x", true, `bad address "ws://h:1/x": [tls] enabled = true, but tcp:// and ws:// are plain; use tls:// or wss://, or set [tls] enabled = false`},
		{"WS://h:1", true, `bad address "WS://h:1": [tls] enabled = true, but tcp:// and ws:// are plain`},
		{"ws://h", false, `bad address "ws://h": the port is missing (there is no default port)`},
		{"wss://h/gotunnel", false, `bad address "wss://h/gotunnel": the port is missing (there is no default port)`},
		{"tls://[::1]", false, `bad address "tls://[::1]": the port is missing (there is no default port)`},
		{"tls://::1:443", false, `bad address "tls://::1:443": an IPv6 address goes in brackets, such as [::1]:7000`},
		{"tls://[::1:443", false, `bad address "tls://[::1:443": want host:port after the scheme`},
		{"tls://", false, `bad address "tls://": the host and port are missing`},
		{"wss:///x", false, `bad address "wss:///x": the host and port are missing`},
		{"tcp://:7000", false, `bad address "tcp://:7000": the host is missing`},
		{"tcp://a_b!:7000", false, `bad address "tcp://a_b!:7000": "a_b!" is not an IP address or host name`},
		{"tcp://h:70000", false, `bad address "tcp://h:70000": want a port number 1..65535`},
		{"tcp://h:x", false, `bad address "tcp://h:x": want a port number 1..65535`},
		{"tcp://h:1/x", false, `bad address "tcp://h:1/x": tcp:// takes no path; only ws:// and wss:// do`},
		{"tls://h:1/x", false, `bad address "tls://h:1/x": tls:// takes no path`},
		{"ws://h:1/x?y=1", false, `bad address "ws://h:1/x?y=1": a query (?) or fragment (#) is not allowed`},
		{"ws://h:1/x#y", false, `a query (?) or fragment (#) is not allowed`},
		{"ws://h:1?", false, `a query (?) or fragment (#) is not allowed`},
		{"wss://u@h:443/x", false, `bad address "wss://u@h:443/x": user info (user@ or user:password@) is not allowed`},
		{"wss://u:secret@h:443", false, `bad address "wss://u:xxxxx@h:443": user info`},
		{"ws://h:1/a b", false, `the path holds a space or a control character; write a space as %20`},
		{"ws://h:1/a\x7f", false, `the path holds a space or a control character`},
		{"ws://h:1/100%", false, `the path holds a bad %-escape; write % itself as %25`},
		{"ws://h:1/" + strings.Repeat("p", 256), false, `the path is 257 bytes long; at most 256`},
		{"http://h:80/x", false, `bad address "http://h:80/x": the scheme must be tcp://, tls://, ws:// or wss://; through an HTTP server, use ws:// or wss://`},
		{"https://h:443", false, `through an HTTP server, use ws:// or wss://`},
		{"udp://h:1", false, `bad address "udp://h:1": the scheme must be tcp://, tls://, ws:// or wss://, or write host:port without one`},
		{"://h:1", false, `the scheme must be tcp://, tls://, ws:// or wss://`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s,tls=%v", tt.addr, tt.tls), func(t *testing.T) {
			got, err := ParseEndpoint(tt.addr, tt.tls)
			if err == nil || !strings.Contains(err.Error(), tt.want) || got != (Endpoint{}) {
				t.Errorf("ParseEndpoint(%q, %v) = %+v, %v; want an error %q", tt.addr, tt.tls, got, err, tt.want)
			}
		})
	}
}

func TestClientEndpointAndTLSEnabled(t *testing.T) {
	on, off := &ClientTLS{Enabled: true}, &ClientTLS{Enabled: false}
	tests := []struct {
		addr    string
		tls     *ClientTLS
		want    Endpoint
		wantTLS bool
	}{
		{"h:7000", nil, Endpoint{"tcp", "h:7000", ""}, false},
		{"h:7000", on, Endpoint{"tls", "h:7000", ""}, true},
		{"h:7000", off, Endpoint{"tcp", "h:7000", ""}, false},
		{"tcp://h:7000", nil, Endpoint{"tcp", "h:7000", ""}, false},
		{"tcp://h:7000", off, Endpoint{"tcp", "h:7000", ""}, false},
		{"tls://h:443", nil, Endpoint{"tls", "h:443", ""}, true},
		{"tls://h:443", off, Endpoint{"tls", "h:443", ""}, true},
		{"ws://h:80", nil, Endpoint{"ws", "h:80", "/gotunnel"}, false},
		{"wss://h:443/t", nil, Endpoint{"wss", "h:443", "/t"}, true},
		{"wss://h:443/t", on, Endpoint{"wss", "h:443", "/t"}, true},
		{"bad", nil, Endpoint{}, false},
		{"tcp://h:7000", on, Endpoint{}, true}, // invalid: [tls] enabled still says TLS
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			c := DefaultClient()
			c.ServerAddr, c.TLS = tt.addr, tt.tls
			if got := c.Endpoint(); got != tt.want {
				t.Errorf("Client{ServerAddr: %q, TLS: %+v}.Endpoint() = %+v, want %+v", tt.addr, tt.tls, got, tt.want)
			}
			if got := c.TLSEnabled(); got != tt.wantTLS {
				t.Errorf("Client{ServerAddr: %q, TLS: %+v}.TLSEnabled() = %v, want %v", tt.addr, tt.tls, got, tt.wantTLS)
			}
		})
	}
}

func TestParseClientEndpoint(t *testing.T) {
	doc := "server_addr = 'WSS://[::1]:8443'\ntoken = 't'\n[tls]\nca_file = 'ca.pem'\n"
	c, err := ParseClient("client.toml", []byte(doc), nil)
	if err != nil {
		t.Fatalf("ParseClient(%q) = %v, want no error", doc, err)
	}
	if got, want := c.Endpoint(), (Endpoint{"wss", "[::1]:8443", "/gotunnel"}); got != want || !c.TLSEnabled() {
		t.Errorf("ParseClient(%q).Endpoint(), TLSEnabled() = %+v, %v; want %+v, true", doc, got, c.TLSEnabled(), want)
	}
	if c.ServerAddr != "WSS://[::1]:8443" {
		t.Errorf("ParseClient(%q).ServerAddr = %q, want it as written", doc, c.ServerAddr)
	}
}

func TestClientValidateURL(t *testing.T) {
	c := DefaultClient()
	c.ServerAddr, c.Token = "wss://tunnel.example.com:443/tunnel", "t"
	c.ProxyURL = "socks5://proxy.lan:1080"
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	c.ServerAddr, c.ProxyURL = "ftp://h:21", "https://u:pw@p:1"
	checkErrors(t, "Validate()", c.Validate(), "", []want{
		{0, "server_addr", "the scheme must be"},
		{0, "proxy_url", `bad proxy URL "https://u:xxxxx@p:1": https:// proxies are not supported`},
	})
}

func TestClientProxy(t *testing.T) {
	tests := []struct {
		proxyURL string
		want     string // the URL's String; "" for nil
		wantOK   bool
	}{
		{"", "", false},
		{"none", "", true},
		{"http://proxy.lan:3128", "http://proxy.lan:3128", true},
		{"http://proxy.lan:3128/", "http://proxy.lan:3128/", true},
		{"HTTP://proxy.lan:3128", "http://proxy.lan:3128", true},
		{"http://bob:s%2Fcr%40t@proxy.lan:3128", "http://bob:s%2Fcr%40t@proxy.lan:3128", true},
		{"http://bob:p@ss@proxy.lan:3128", "http://bob:p%40ss@proxy.lan:3128", true},
		{"socks5://[::1]:1080", "socks5://[::1]:1080", true},
		{"socks5://bob:pw@10.0.0.1:1080", "socks5://bob:pw@10.0.0.1:1080", true},
		{"Socks5://bob@10.0.0.1:1080", "socks5://bob@10.0.0.1:1080", true},
		{"https://proxy.lan:3128", "", true}, // invalid: never the environment
	}
	for _, tt := range tests {
		t.Run(tt.proxyURL, func(t *testing.T) {
			c := DefaultClient()
			c.ProxyURL = tt.proxyURL
			u, ok := c.Proxy()
			got := ""
			if u != nil {
				got = u.String()
			}
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Client{ProxyURL: %q}.Proxy() = %q, %v; want %q, %v", tt.proxyURL, got, ok, tt.want, tt.wantOK)
			}
		})
	}
	c := DefaultClient()
	c.ProxyURL = "http://bob:s%2Fcr%40t@proxy.lan:3128"
	u, _ := c.Proxy()
	if pw, _ := u.User.Password(); u.User.Username() != "bob" || pw != "s/cr@t" || u.Host != "proxy.lan:3128" {
		t.Errorf("Proxy() = user %q, password %q, host %q; want bob, s/cr@t, proxy.lan:3128", u.User.Username(), pw, u.Host)
	}
}

func TestParseProxyURLErrors(t *testing.T) {
	tests := []struct {
		raw  string
		want string
	}{
		{"proxy.lan:3128", `bad proxy URL "proxy.lan:3128": want http://[user:password@]host:port or socks5://[user:password@]host:port, or "none" for no proxy`},
		{"NONE", `or "none" for no proxy`},
		{"https://proxy.lan:3128", `bad proxy URL "https://proxy.lan:3128": https:// proxies are not supported; use http:// (the tunnel inside is TLS when you set it)`},
		{"socks5h://proxy.lan:1080", `the scheme must be http:// (HTTP CONNECT) or socks5://`},
		{"http://proxy.lan", `bad proxy URL "http://proxy.lan": the port is missing (there is no default port)`},
		{"http://proxy.lan:", `want a port number 1..65535`},
		{"http://:3128", `the host is missing`},
		{"http://", `the host and port are missing`},
		{"http://proxy.lan:3128/path", `a proxy URL takes no path, query or fragment`},
		{"http://proxy.lan:3128?x", `a proxy URL takes no path, query or fragment`},
		{"http://proxy.lan:3128#x", `a proxy URL takes no path, query or fragment`},
		{"http://u:p/w@proxy.lan:3128", `bad proxy URL "http://u:xxxxx@proxy.lan:3128": a / ? or # in the user name or password must be percent-encoded (%2F %3F %23)`},
		{"http://u:p%zz@proxy.lan:3128", `bad proxy URL "http://u:xxxxx@proxy.lan:3128": the user name or password holds a character that must be percent-encoded`},
		{"socks5://:pw@proxy.lan:1080", `SOCKS5 needs a user name of 1 to 255 bytes`},
		{"socks5://" + strings.Repeat("u", 256) + "@proxy.lan:1080", `SOCKS5 needs a user name of 1 to 255 bytes`},
		{"socks5://u:" + strings.Repeat("p", 256) + "@proxy.lan:1080", `bad proxy URL "socks5://u:xxxxx@proxy.lan:1080": SOCKS5 takes a password of at most 255 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			u, err := parseProxyURL(tt.raw)
			if err == nil || !strings.Contains(err.Error(), tt.want) || u != nil {
				t.Errorf("parseProxyURL(%q) = %v, %v; want an error %q", tt.raw, u, err, tt.want)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://proxy.lan:3128", "http://proxy.lan:3128"},
		{"http://bob@proxy.lan:3128", "http://bob@proxy.lan:3128"},
		{"http://bob:pw@proxy.lan:3128", "http://bob:xxxxx@proxy.lan:3128"},
		{"http://bob:p@w:d@proxy.lan:3128", "http://bob:xxxxx@proxy.lan:3128"},
		{"http://bob:p/w@proxy.lan:3128", "http://bob:xxxxx@proxy.lan:3128"},
		{"bob:pw@proxy.lan:3128", "bob:xxxxx@proxy.lan:3128"},
		{"bob:pw@h://x", "bob:xxxxx@h://x"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestProxyPasswordNeverShown checks that no error text quotes the password
// of proxy_url, whatever is wrong with it or around it.
func TestProxyPasswordNeverShown(t *testing.T) {
	const secret = "pr0xy-S3cret"
	parts := []string{secret, "pr0", "r0x", "S3c", "cret", url.QueryEscape(secret)}
	docs := []struct {
		name string
		doc  string
	}{
		{"https proxy", "proxy_url = 'https://bob:" + secret + "@proxy.lan:3128'\n"},
		{"unknown scheme", "proxy_url = 'ftp://bob:" + secret + "@proxy.lan:21'\n"},
		{"no scheme", "proxy_url = 'bob:" + secret + "@proxy.lan:3128'\n"},
		{"no port", "proxy_url = 'http://bob:" + secret + "@proxy.lan'\n"},
		{"bad port", "proxy_url = 'http://bob:" + secret + "@proxy.lan:99999'\n"},
		{"bad host", "proxy_url = 'socks5://bob:" + secret + "@pro%xy:1080'\n"},
		{"path", "proxy_url = 'http://bob:" + secret + "@proxy.lan:3128/p'\n"},
		{"query", "proxy_url = 'http://bob:" + secret + "@proxy.lan:3128?q'\n"},
		{"slash in password", "proxy_url = 'http://bob:" + secret + "/x@proxy.lan:3128'\n"},
		{"slash before password", "proxy_url = 'http://bob:x/" + secret + "@proxy.lan:3128'\n"},
		{"hash in password", "proxy_url = 'http://bob:x#" + secret + "@proxy.lan:3128'\n"},
		{"bad escape in password", "proxy_url = 'http://bob:" + secret + "%zz@proxy.lan:3128'\n"},
		{"space in password", "proxy_url = 'http://bob:" + secret + " x@proxy.lan:3128'\n"},
		{"at in password", "proxy_url = 'https://bob:" + secret + "@x@proxy.lan:3128'\n"},
		{"escaped password", "proxy_url = 'https://bob:" + url.QueryEscape(secret) + "@proxy.lan:3128'\n"},
		{"long socks5 password", "proxy_url = 'socks5://bob:" + secret + strings.Repeat("x", 255) + "@proxy.lan:1080'\n"},
		{"empty socks5 user", "proxy_url = 'socks5://:" + secret + "@proxy.lan:1080'\n"},
		{"wrong type", "proxy_url = ['http://bob:" + secret + "@proxy.lan:3128']\n"},
		{"as a table", "[proxy_url]\nurl = 'http://bob:" + secret + "@proxy.lan:3128'\n"},
		{"twice", "proxy_url = 'none'\nproxy_url = 'http://bob:" + secret + "@proxy.lan:3128'\n"},
		{"bad escape in the string", "proxy_url = \"http://bob:" + secret + "\\q@proxy.lan:3128\"\n"},
		{"unterminated", "proxy_url = \"http://bob:" + secret + "@proxy.lan:3128\n"},
		{"junk after", "proxy_url = \"http://bob:" + secret + "@proxy.lan:3128\"" + secret + "\n"},
		{"among other errors", "proxy_url = 'http://bob:" + secret + "@proxy.lan'\nserver_addr = 1\nfoo = 2\n"},
		{"in server_addr", "server_addr = 'wss://bob:" + secret + "@h:443/x'\n"},
		{"in bare server_addr", "server_addr = 'bob:" + secret + "@h:443'\n"},
	}
	for _, tt := range docs {
		t.Run(tt.name, func(t *testing.T) {
			doc := "token = 't'\n" + tt.doc
			if !strings.Contains(doc, "server_addr") {
				doc = "server_addr = 'h:1'\n" + doc
			}
			_, err := ParseClient("c.toml", []byte(doc), nil)
			_, kindErr := Kind("c.toml", []byte(doc)) // may be nil
			if err == nil {
				t.Fatalf("ParseClient(%q) = nil, want an error", doc)
			}
			for _, e := range []error{err, kindErr} {
				for _, part := range parts {
					if e != nil && strings.Contains(e.Error(), part) {
						t.Errorf("ParseClient(%q) = %q, want no part of the password", doc, e)
					}
				}
			}
		})
	}
}
