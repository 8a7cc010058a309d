package test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// logRec is one recorded log line: level, message and attributes as text.
type logRec struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

// logStore records every line a logger writes, for tests that assert on
// what an operator would read.
type logStore struct {
	mu   sync.Mutex
	recs []logRec
}

// recordingLogger returns a logger that records into a new store and also
// writes to the test log when -v.
func recordingLogger(t testing.TB) (*slog.Logger, *logStore) {
	s := &logStore{}
	return slog.New(&recHandler{store: s, next: testLogger(t).Handler()}), s
}

// has reports whether a line with msg (a prefix) and every key=value in kv
// was written.
func (s *logStore) has(msg string, kv ...string) bool { return s.count(msg, kv...) > 0 }

func (s *logStore) count(msg string, kv ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.recs {
		if r.match(msg, kv...) {
			n++
		}
	}
	return n
}

// countLevel counts the matching lines written at level (e.g. "WARN").
func (s *logStore) countLevel(level, msg string, kv ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.recs {
		if r.Level.String() == level && r.match(msg, kv...) {
			n++
		}
	}
	return n
}

func (r logRec) match(msg string, kv ...string) bool {
	if !strings.HasPrefix(r.Msg, msg) {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if r.Attrs[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// waitLog polls until a matching line was written.
func (s *logStore) waitLog(t testing.TB, d time.Duration, msg string, kv ...string) {
	t.Helper()
	if err := pollFor(d, func() bool { return s.has(msg, kv...) }); err != nil {
		t.Fatalf("no log line %q %v within %s", msg, kv, d)
	}
}

type recHandler struct {
	store *logStore
	attrs []slog.Attr
	next  slog.Handler
}

func (h *recHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recHandler) Handle(ctx context.Context, r slog.Record) error {
	rec := logRec{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.store.mu.Lock()
	h.store.recs = append(h.store.recs, rec)
	h.store.mu.Unlock()
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recHandler{store: h.store, attrs: append(slices.Clone(h.attrs), as...), next: h.next.WithAttrs(as)}
}

func (h *recHandler) WithGroup(name string) slog.Handler {
	return &recHandler{store: h.store, attrs: h.attrs, next: h.next.WithGroup(name)}
}
