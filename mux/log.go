package mux

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// discard is the logger used when Options.Logger is nil.
var discard = slog.New(slog.DiscardHandler)

// yamuxLogger bridges yamux's Printf-style log lines into slog. yamux marks
// lines "[ERR]" or "[WARN]"; both are a peer or the network misbehaving and
// go out at warn, except the noise of a connection closed on purpose.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any)                 { y.log(fmt.Sprint(v...)) }
func (y yamuxLogger) Printf(format string, v ...any) { y.log(fmt.Sprintf(format, v...)) }
func (y yamuxLogger) Println(v ...any)               { y.log(fmt.Sprint(v...)) }

func (y yamuxLogger) log(line string) {
	l := cmp.Or(y.l, discard)
	level := slog.LevelDebug
	switch {
	case benign(line):
	case strings.HasPrefix(line, "[ERR]"), strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	}
	detail := strings.TrimSpace(line)
	for _, p := range []string{"[ERR]", "[WARN]", "[INFO]", "[DEBUG]", "yamux:"} {
		detail = strings.TrimSpace(strings.TrimPrefix(detail, p))
	}
	l.Log(context.Background(), level, "yamux", "detail", detail)
}

// benign reports whether a yamux line only says that the connection ended
// the ordinary way: closed here, or closed by the peer (yamux recognises
// plain TCP's wording itself, not a WebSocket's).
func benign(line string) bool {
	for _, s := range []string{"use of closed network connection", "context canceled", ": EOF", "StatusNormalClosure"} {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}
