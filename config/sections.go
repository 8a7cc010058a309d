package config

// Log is the log table of both files: level and format of the logs.
type Log struct {
	Level  string `toml:"level"`  // debug | info | warn | error; default "info"
	Format string `toml:"format"` // text | json; default "text"
}

// defaultLog returns the [log] defaults.
func defaultLog() Log { return Log{Level: "info", Format: "text"} }

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
