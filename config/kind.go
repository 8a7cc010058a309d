package config

// Kind tells a server file from a client file, for `gotunnel-mux check`: it
// returns "server" when the document has a top-level bind_addr key and
// "client" when it has server_addr or server_addrs. A document with both or neither, or
// that is not TOML, gives an Errors naming the file.
func Kind(name string, data []byte) (string, error) {
	pos, serr := scanPositions(data)
	if serr != nil {
		serr.File = name
		return "", Errors{serr}
	}
	server, client := pos.has("bind_addr"), pos.has("server_addr") || pos.has("server_addrs")
	switch {
	case server && !client:
		return "server", nil
	case client && !server:
		return "client", nil
	case server:
		return "", Errors{{File: name, Msg: "has both bind_addr (a server file) and server_addr or server_addrs (a client file); keep one"}}
	default:
		return "", Errors{{File: name, Msg: "has neither bind_addr (a server file) nor server_addr or server_addrs (a client file); add the one that fits"}}
	}
}
