package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// newLogger builds the process logger: tint text (colour only on a
// terminal, and never with NO_COLOR set) or JSON lines.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	log, _, err := newLeveledLogger(w, level, format)
	return log, err
}

// newLeveledLogger is newLogger with the level it filters at, which a
// reload may change.
func newLeveledLogger(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar, error) {
	lv := new(slog.LevelVar)
	if err := setLevel(lv, level); err != nil {
		return nil, nil, err
	}
	log, err := loggerAt(w, lv, format)
	return log, lv, err
}

// setLevel sets lv to a [log] level.
func setLevel(lv *slog.LevelVar, level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	lv.Set(l)
	return nil
}

func loggerAt(w io.Writer, lv *slog.LevelVar, format string) (*slog.Logger, error) {
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	case "text", "":
		return slog.New(tint.NewTextHandler(w, &tint.Options{
			Level:      lv,
			TimeFormat: time.DateTime,
			NoColor:    !colour(w),
		})), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// colour reports whether w is a terminal that wants colour.
func colour(w io.Writer) bool {
	if _, ok := os.LookupEnv("NO_COLOR"); ok {
		return false
	}
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
