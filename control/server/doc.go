// Package server is the gotunnel-mux server: it accepts client
// connections through the one-port entry of mux/transport, guards the
// connections that have not logged in, logs clients in, keeps the
// registry of client names (a new login takes a name over), binds each
// mapping's public port, sweeps sessions that went quiet, and serves each
// visitor by opening a data stream to the client.
//
//	srv := server.New(server.Options{Token: tok, Logger: log})
//	go srv.Serve(ln) // ln from net.Listen; Serve returns ErrClosed after Close
//	defer srv.Close()
//
// Zero Options fields take the defaults of docs/config.md; Options
// documents them. It does not read configuration files or the
// environment, install signal handlers or choose log handlers: package
// main does.
package server
