package main

import (
	"fmt"
	"net/url"

	"golang.org/x/net/http/httpproxy"

	"github.com/gotunnel-mux/gotunnel-mux/config"
)

// clientProxy is the proxy the client dials the server through: proxy_url
// when it is set ("none": no proxy), else the environment as Go programs
// and curl read it: HTTPS_PROXY (https_proxy), then ALL_PROXY (all_proxy),
// with NO_PROXY honoured and loopback never proxied. nil: dial directly.
func clientProxy(cfg *config.Client, lookup func(string) (string, bool)) (*url.URL, error) {
	if u, ok := cfg.Proxy(); ok {
		return u, nil
	}
	env := func(names ...string) string {
		for _, n := range names {
			if v, ok := lookup(n); ok && v != "" {
				return v
			}
		}
		return ""
	}
	pc := &httpproxy.Config{
		HTTPSProxy: env("HTTPS_PROXY", "https_proxy"),
		NoProxy:    env("NO_PROXY", "no_proxy"),
	}
	from := "HTTPS_PROXY"
	if pc.HTTPSProxy == "" {
		pc.HTTPSProxy, from = env("ALL_PROXY", "all_proxy"), "ALL_PROXY"
	}
	if pc.HTTPSProxy == "" {
		return nil, nil
	}
	u, err := pc.ProxyFunc()(&url.URL{Scheme: "https", Host: cfg.Endpoint().Host})
	if err != nil {
		return nil, fmt.Errorf("%s: not a proxy URL", from)
	}
	if u == nil {
		return nil, nil // NO_PROXY or loopback
	}
	switch u.Scheme {
	case "http":
	case "socks5", "socks5h":
		u.Scheme = "socks5"
	default:
		return nil, fmt.Errorf("%s=%s: %s proxies are not supported; use http:// or socks5://", from, u.Redacted(), u.Scheme)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("%s=%s: the proxy's port is missing", from, u.Redacted())
	}
	return u, nil
}
