// Package client is the gotunnel-mux client: it keeps one session to the
// server alive (dial through mux/transport, login, reconnect with
// backoff), registers the mappings, reports each local service's health,
// and serves each data stream by dialling the mapping's local service.
//
//	cl, err := client.New(client.Options{
//		ServerAddr: "tunnel.example.com:7000", Token: tok, Name: "laptop",
//		Mappings: []client.Mapping{{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022}},
//	})
//	err = cl.Run(ctx) // reconnects until ctx ends or the server refuses for good
//
// Zero Options fields take the defaults of docs/config.md; Options
// documents them. It does not read configuration files or the
// environment, install signal handlers or choose log handlers: package
// main does.
package client
