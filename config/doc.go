// Package config reads and checks gotunnel-mux's configuration: server.toml,
// client.toml and the client's quick-mode --map flags.
//
// Files are TOML, decoded strictly over the defaults (DefaultServer,
// DefaultClient): an unknown key, a wrong type or a bad value is an error
// that names the file, the line and the full key, and every problem in a
// file is reported at once as an Errors:
//
//	client.toml:7: reconnect.max: must be at least reconnect.min (5s), got 1s
//	client.toml:14: mappings[1].name: duplicate name "ssh" (also mappings[0]); names must be unique
//	client.toml: token: missing (required); set it in the file or GOTUNNEL_TOKEN
//
// GOTUNNEL_TOKEN, read through the Env passed in, overrides the file's
// token. A token never appears in an error.
//
// Loading a client file:
//
//	c, err := config.LoadClient("client.toml", os.LookupEnv)
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err) // one problem per line
//		os.Exit(2)
//	}
//	for _, m := range c.Mappings {
//		fmt.Println(m.Name, m.LocalAddr, m.RemotePort)
//	}
//
// Quick mode builds a Client in code and checks it the same way:
//
//	c := config.DefaultClient()
//	c.ServerAddr, c.Token = "tunnel.example.com:7000", token
//	m, err := config.ParseMap("ssh=10022:127.0.0.1:22")
//	...
//	c.Mappings = append(c.Mappings, m)
//	err = c.Validate()
//
// server_addr is host:port or a tcp://, tls://, ws:// or wss:// URL;
// Client.Endpoint and Client.TLSEnabled give it resolved, so that no other
// package parses it again. Client.Proxy gives proxy_url parsed, and says
// when the proxy is to come from the environment. proxy_url may hold a
// password: like the token, it never appears in an error.
//
// What it does not do: it opens no socket and resolves no host name (an
// address is only checked for its host:port shape), it does not open the
// TLS certificate and key files it names, it reads no environment variable
// other than through the Env it is given (HTTPS_PROXY, ALL_PROXY and
// NO_PROXY are package main's to read), and it logs nothing. Turning a
// configuration into each engine package's Options is the job of cmd.
package config
