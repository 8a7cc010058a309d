package config

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseMap parses the value of a quick-mode --map flag,
// "[NAME=]REMOTE_PORT:LOCAL_ADDR":
//
//	10022:127.0.0.1:22
//	ssh=10022:127.0.0.1:22
//	0:localhost:8080        (the server picks the remote port)
//	web=0:[::1]:8080
//
// Name and HealthCheck are left for Client.Validate to default when not
// given. The error is an *Error with Key "--map" that quotes the value.
func ParseMap(spec string) (Mapping, error) {
	var m Mapping
	rest := spec
	if name, after, ok := strings.Cut(spec, "="); ok && !strings.Contains(name, ":") {
		if !validName(name) {
			return Mapping{}, mapError(spec, fmt.Sprintf("bad name %q: want 1 to 64 of A-Z a-z 0-9 . _ -", name))
		}
		m.Name, rest = name, after
	}
	port, local, ok := strings.Cut(rest, ":")
	if !ok {
		return Mapping{}, mapError(spec, `want [NAME=]REMOTE_PORT:LOCAL_ADDR, such as "ssh=10022:127.0.0.1:22"`)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return Mapping{}, mapError(spec, fmt.Sprintf("bad remote port %q: want 0..65535 (0: the server picks)", port))
	}
	if msg := hostPortProblem(local, false, 1); msg != "" {
		return Mapping{}, mapError(spec, msg)
	}
	m.RemotePort, m.LocalAddr = p, local
	return m, nil
}

// mapError reports a bad --map value.
func mapError(spec, msg string) *Error {
	return &Error{Key: "--map", Msg: fmt.Sprintf("%q: %s", spec, msg)}
}
