// Package control speaks the gotunnel-mux control protocol: the message
// catalog and its length-prefixed JSON codec (the data stream's header and
// ack too), the server (accept, login, registry of clients and mappings,
// heartbeat sweep) and the client (dial, login, register, heartbeat,
// reconnect, accept data streams).
//
// A server:
//
//	srv := control.NewServer(control.ServerOptions{Token: tok, Logger: log})
//	go srv.Serve(ln) // ln from net.Listen; Serve returns ErrServerClosed after Close
//	defer srv.Close()
//
// A client:
//
//	cl, err := control.NewClient(control.ClientOptions{
//		ServerAddr: "tunnel.example.com:7000", Token: tok, Name: "laptop",
//		Mappings: []control.Mapping{{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022}},
//	})
//	err = cl.Run(ctx) // reconnects until ctx ends or the server refuses for good
//
// It does not read configuration files or the environment, install signal
// handlers or choose log handlers: package main does. docs/protocol.md is
// the normative description of the wire format implemented here.
package control
