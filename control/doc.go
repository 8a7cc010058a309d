// Package control is the gotunnel-mux control protocol's wire format:
// the message catalog and its length-prefixed JSON codec (the data
// stream's header and ack too), the refusal codes and RejectError, the
// control stream's writer (one FIFO, with the step that must follow a
// frame), and the table of a session's data streams, which owns how each
// of them ends (protocol.md 7.5). Both sides build on it: the server in
// package control/server, the client in control/client.
//
// Framing a message:
//
//	err := control.WriteFrame(w, &control.Ping{Time: now.UnixMilli()})
//	m, err := control.ReadFrame(r) // a Message; check its type with a switch
//
// It imports only the standard library: it dials nothing, listens on
// nothing and knows neither yamux nor the transports. docs/protocol.md is
// the normative description of the format implemented here.
package control
