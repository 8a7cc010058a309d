package config

import (
	"fmt"
	"net"
	"net/netip"
)

// Log is the log table of both files: level and format of the logs.
type Log struct {
	Level  string `toml:"level"`  // debug | info | warn | error; default "info"
	Format string `toml:"format"` // text | json; default "text"
	// Access logs a line per visitor connection at info: client, mapping,
	// visitor address, bytes each way, duration, how it ended. Default on
	// for the server, off for the client (the server's line says it all).
	Access bool `toml:"access"`
}

// defaultLog returns the [log] defaults of the client; the server's
// turns Access on.
func defaultLog() Log { return Log{Level: "info", Format: "text"} }

// Admin is the [admin] table of both files: the admin HTTP API (health,
// readiness, metrics, status, reload, the dashboard).
type Admin struct {
	// Addr is where the API listens, "host:port"; ":port" means loopback
	// (127.0.0.1). Empty (the default): no API.
	Addr string `toml:"addr"`
	// Token is the bearer token every request but /healthz and /readyz
	// must carry; required when Addr is not loopback. The environment's
	// GOTUNNEL_ADMIN_TOKEN overrides it.
	Token string `toml:"token"`
	// CertFile and KeyFile, both set, serve the API over HTTPS.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// check checks the [admin] table, and makes a bare ":port" loopback.
func (a *Admin) check(c *checker) {
	if a.Addr == "" {
		return
	}
	if msg := hostPortProblem(a.Addr, true, 0); msg != "" {
		c.add("admin.addr", "%s", msg)
		return
	}
	host, port, _ := net.SplitHostPort(a.Addr)
	if host == "" {
		a.Addr = net.JoinHostPort("127.0.0.1", port)
	} else if !Loopback(host) && a.Token == "" {
		c.missing("admin.token", "admin", fmt.Sprintf("admin.addr %q is not loopback: the API needs a token (or GOTUNNEL_ADMIN_TOKEN)", a.Addr))
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		c.add("admin.cert_file", "[admin] needs both cert_file and key_file for HTTPS, or neither")
	}
}

// Loopback reports whether host is a loopback address or "localhost".
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// check checks the [log] table.
func (l Log) check(c *checker) {
	c.oneOf("log.level", "log level", l.Level, "debug", "info", "warn", "error")
	c.oneOf("log.format", "log format", l.Format, "text", "json")
}

// Mux is the [mux] table of both files: tuning of the yamux session.
type Mux struct {
	// WindowSize is the receive window of each stream. One stream moves at
	// most about WindowSize per round trip; the memory is spent only while
	// a receiver lags. Default DefaultWindowSize, from MinWindowSize to
	// MaxWindowSize.
	WindowSize Size `toml:"window_size"`
	// BufferSize is a relay's copy buffer, one per direction while bytes
	// flow, and so the largest data frame this side writes. Larger moves
	// bulk data with fewer frames; smaller lets a new visitor's first frame
	// pass sooner on a slow, saturated uplink. Default DefaultBufferSize,
	// from MinBufferSize to MaxBufferSize.
	BufferSize Size `toml:"buffer_size"`
}

// Bounds and default of Mux.WindowSize.
const (
	DefaultWindowSize = 1 << 20   // 1 MiB
	MinWindowSize     = 256 << 10 // 256 KiB, yamux's own minimum
	MaxWindowSize     = 64 << 20  // 64 MiB
)

// Bounds and default of Mux.BufferSize.
const (
	DefaultBufferSize = 32 << 10 // 32 KiB
	MinBufferSize     = 4 << 10  // 4 KiB
	MaxBufferSize     = 1 << 20  // 1 MiB
)

// defaultMux returns the [mux] defaults.
func defaultMux() Mux { return Mux{WindowSize: DefaultWindowSize, BufferSize: DefaultBufferSize} }

// check checks the [mux] table.
func (m Mux) check(c *checker) {
	if m.WindowSize < MinWindowSize || m.WindowSize > MaxWindowSize {
		c.add("mux.window_size", "%s is out of range %s..%s",
			m.WindowSize, Size(MinWindowSize), Size(MaxWindowSize))
	}
	if m.BufferSize < MinBufferSize || m.BufferSize > MaxBufferSize {
		c.add("mux.buffer_size", "%s is out of range %s..%s",
			m.BufferSize, Size(MinBufferSize), Size(MaxBufferSize))
	}
}
