package main

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
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
