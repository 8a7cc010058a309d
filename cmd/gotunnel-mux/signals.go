package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// stopper turns SIGINT/SIGTERM into a graceful stop (the first signal ends
// ctx) and an immediate one (the second closes hard).
type stopper struct {
	ctx    context.Context
	hard   chan struct{}
	cancel context.CancelFunc
	sig    chan os.Signal
	done   chan struct{}
	wg     sync.WaitGroup
}

func newStopper() *stopper {
	s := &stopper{hard: make(chan struct{}), sig: make(chan os.Signal, 2), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	signal.Notify(s.sig, syscall.SIGINT, syscall.SIGTERM)
	s.wg.Go(s.loop)
	return s
}

func (s *stopper) loop() {
	for n := 0; ; {
		select {
		case <-s.sig:
			n++
			if n == 1 {
				s.cancel()
			} else {
				close(s.hard)
				return
			}
		case <-s.done:
			return
		}
	}
}

// stop stops listening for signals and joins the loop.
func (s *stopper) stop() {
	signal.Stop(s.sig)
	close(s.done)
	s.wg.Wait()
	s.cancel()
}

// graceful runs shutdown with a context that ends after grace, or at once
// on a second signal, and returns what shutdown returned.
func (s *stopper) graceful(grace time.Duration, log *slog.Logger, shutdown func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { // a second signal cuts the grace short
		select {
		case <-s.hard:
			log.Warn("second signal: stopping now")
			cancel()
		case <-ctx.Done():
		}
	})
	err := shutdown(ctx)
	cancel()
	return err
}

// onSIGHUP calls f on every SIGHUP (instead of the default: exit) until
// the returned stop func is called; stop waits for a running f.
func onSIGHUP(f func()) (stop func()) {
	sig := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(sig, syscall.SIGHUP)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-sig:
				f()
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(sig)
		close(done)
		wg.Wait()
	}
}

// oneProc runs the client's Go code on one OS thread at a time unless the
// GOMAXPROCS environment variable says otherwise. Every visitor's bytes hop
// between goroutines (a relay, yamux's send and receive loops); on one
// thread a hop is a goroutine switch, on several it is often the wake-up
// of another thread. Measured with make bench (docs/performance.md): one
// connection 365 instead of 276 MiB/s, a round trip 264 instead of 395 us.
// The server does not call it: it carries every client, on every core.
func oneProc() {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(1)
	}
}
