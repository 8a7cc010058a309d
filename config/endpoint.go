package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Endpoint is server_addr resolved: how and where the client connects.
type Endpoint struct {
	Scheme string // "tcp", "tls", "ws" or "wss"
	Host   string // host:port
	Path   string // ws and wss only, e.g. "/gotunnel"; percent-escapes decoded, as url.URL.Path holds it
}

// DefaultWSPath is the path of ws:// and wss:// URLs without one, and the
// server's default ws_path.
const DefaultWSPath = "/gotunnel"

// maxWSPath is the longest WebSocket path, in bytes, on either side.
const maxWSPath = 256

// ParseEndpoint parses server_addr; tlsEnabled says whether [tls] enabled =
// true. server_addr is either host:port, which is tcp, or tls when
// tlsEnabled, or a URL: tcp://host:port, tls://host:port,
// ws://host:port/path or wss://host:port/path. The scheme is read in any
// case and returned in lower case. The port is always required; a ws or wss
// URL without a path (or with "/") gets DefaultWSPath. A query, a fragment,
// user info, a path after tcp:// or tls://, and tcp:// or ws:// while
// tlsEnabled are errors. The error's text quotes serverAddr with any
// password hidden.
func ParseEndpoint(serverAddr string, tlsEnabled bool) (Endpoint, error) {
	fail := func(format string, args ...any) (Endpoint, error) {
		return Endpoint{}, fmt.Errorf("bad address %q: %s", redactURL(serverAddr), fmt.Sprintf(format, args...))
	}
	const userInfo = "user info (user@ or user:password@) is not allowed; the client logs in with its token"
	scheme, rest, isURL := strings.Cut(serverAddr, "://")
	if !isURL {
		if strings.Contains(serverAddr, "@") {
			return fail(userInfo)
		}
		if msg := hostPortProblem(serverAddr, false, 1); msg != "" {
			return Endpoint{}, errors.New(msg)
		}
		if tlsEnabled {
			return Endpoint{Scheme: "tls", Host: serverAddr}, nil
		}
		return Endpoint{Scheme: "tcp", Host: serverAddr}, nil
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "tcp", "tls", "ws", "wss":
	case "http", "https":
		return fail("the scheme must be tcp://, tls://, ws:// or wss://; through an HTTP server, use ws:// or wss://")
	default:
		return fail("the scheme must be tcp://, tls://, ws:// or wss://, or write host:port without one")
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 && !strings.Contains(rest[:at], "/") {
		return fail(userInfo)
	}
	if strings.ContainsAny(rest, "?#") {
		return fail("a query (?) or fragment (#) is not allowed")
	}
	host, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		host, path = rest[:i], rest[i:]
	}
	if msg := urlHostProblem(host); msg != "" {
		return fail("%s", msg)
	}
	e := Endpoint{Scheme: scheme, Host: host}
	if scheme == "tcp" || scheme == "tls" {
		if path != "" && path != "/" {
			return fail("%s:// takes no path; only ws:// and wss:// do", scheme)
		}
	} else {
		p, msg := wsURLPath(path)
		if msg != "" {
			return fail("%s", msg)
		}
		e.Path = p
	}
	if tlsEnabled && (scheme == "tcp" || scheme == "ws") {
		return fail("[tls] enabled = true, but tcp:// and ws:// are plain; use tls:// or wss://, or set [tls] enabled = false")
	}
	return e, nil
}

// urlHostProblem returns what is wrong with the host:port of a URL, or "".
// It quotes nothing but the host.
func urlHostProblem(hostport string) string {
	if hostport == "" {
		return "the host and port are missing"
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		var ae *net.AddrError
		switch {
		case errors.As(err, &ae) && ae.Err == "missing port in address":
			return "the port is missing (there is no default port)"
		case errors.As(err, &ae) && ae.Err == "too many colons in address":
			return "an IPv6 address goes in brackets, such as [::1]:7000"
		}
		return "want host:port after the scheme, such as tunnel.example.com:443 or [::1]:7000"
	}
	if host == "" {
		return "the host is missing"
	}
	if !validHost(host) {
		return fmt.Sprintf("%q is not an IP address or host name", host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "want a port number 1..65535"
	}
	return ""
}

// wsURLPath returns the WebSocket path of a ws:// or wss:// URL, decoded,
// given its raw path ("" or starting with "/"); or what is wrong with it.
func wsURLPath(raw string) (string, string) {
	if raw == "" || raw == "/" {
		return DefaultWSPath, ""
	}
	for i := range len(raw) {
		if raw[i] <= ' ' || raw[i] == 0x7f {
			return "", "the path holds a space or a control character; write a space as %20"
		}
	}
	p, err := url.PathUnescape(raw)
	if err != nil {
		return "", "the path holds a bad %-escape; write % itself as %25"
	}
	if len(p) > maxWSPath {
		return "", fmt.Sprintf("the path is %d bytes long; at most %d", len(p), maxWSPath)
	}
	return p, ""
}

// Endpoint returns the validated endpoint of a Client, the first of
// server_addrs when it has several (call after Load/Validate succeeded).
// A server_addr that does not validate gives the zero Endpoint.
func (c *Client) Endpoint() Endpoint {
	return c.Servers()[0]
}

// TLSEnabled reports whether the client dials with TLS: [tls] enabled =
// true, or a tls:// or wss:// server_addr.
func (c *Client) TLSEnabled() bool {
	if c.TLS != nil && c.TLS.Enabled {
		return true
	}
	s := c.Endpoint().Scheme
	return s == "tls" || s == "wss"
}

// proxyNone is the proxy_url that turns proxies off, whatever the
// environment says.
const proxyNone = "none"

// Proxy returns the parsed proxy_url. ok is false when proxy_url is "":
// the proxy then comes from the environment, which package main reads.
// proxy_url = "none" gives (nil, true): no proxy at all. Call it after
// Load/Validate succeeded; a proxy_url that does not validate also gives
// (nil, true), so that a bad value never falls back to the environment.
func (c *Client) Proxy() (*url.URL, bool) {
	if c.ProxyURL == "" {
		return nil, false
	}
	if c.ProxyURL == proxyNone {
		return nil, true
	}
	u, err := parseProxyURL(c.ProxyURL)
	if err != nil {
		return nil, true
	}
	return u, true
}

// checkProxy checks proxy_url.
func (c *Client) checkProxy(ck *checker) {
	if c.ProxyURL == "" || c.ProxyURL == proxyNone {
		return
	}
	if _, err := parseProxyURL(c.ProxyURL); err != nil {
		ck.add("proxy_url", "%s", err)
	}
}

// parseProxyURL parses a proxy_url other than "" and "none":
// http://[user:password@]host:port or socks5://[user:password@]host:port,
// with an optional "/" for a path. The error quotes raw with its password
// hidden and never includes net/url's own message, which would quote it.
func parseProxyURL(raw string) (*url.URL, error) {
	fail := func(msg string) (*url.URL, error) {
		return nil, fmt.Errorf("bad proxy URL %q: %s", redactURL(raw), msg)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return fail(`want http://[user:password@]host:port or socks5://[user:password@]host:port, or "none" for no proxy`)
	}
	switch strings.ToLower(scheme) {
	case "http", "socks5":
	case "https":
		return fail("https:// proxies are not supported; use http:// (the tunnel inside is TLS when you set it)")
	default:
		return fail("the scheme must be http:// (HTTP CONNECT) or socks5://")
	}
	authority, path := rest, ""
	at := strings.LastIndex(rest, "@")
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		if at > i {
			return fail("a / ? or # in the user name or password must be percent-encoded (%2F %3F %23)")
		}
		authority, path = rest[:i], rest[i:]
	}
	if path != "" && path != "/" {
		return fail("a proxy URL takes no path, query or fragment")
	}
	if msg := urlHostProblem(authority[at+1:]); msg != "" {
		return fail(msg)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fail("the user name or password holds a character that must be percent-encoded (such as a space or %), or a bad %-escape")
	}
	if u.Scheme == "socks5" && u.User != nil {
		pass, _ := u.User.Password()
		if n := len(u.User.Username()); n < 1 || n > 255 {
			return fail("SOCKS5 needs a user name of 1 to 255 bytes")
		}
		if len(pass) > 255 {
			return fail("SOCKS5 takes a password of at most 255 bytes")
		}
	}
	return u, nil
}

// redactURL returns s with the password of its user info, if any, replaced
// by "xxxxx": everything from the first ':' after "://" (or the start) to
// the last '@'. It works on strings that do not parse as URLs, so that an
// error may quote any value.
func redactURL(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s[:at], "://"); i >= 0 {
		start = i + len("://")
	}
	name, _, hasPassword := strings.Cut(s[start:at], ":")
	if !hasPassword {
		return s
	}
	return s[:start] + name + ":xxxxx" + s[at:]
}
