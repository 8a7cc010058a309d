package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// The sd_notify messages of a Type=notify unit (docs/systemd/): the
// process says READY=1 once it serves, RELOADING=1 then READY=1 around a
// SIGHUP, STOPPING=1 when a signal starts the shutdown, and WATCHDOG=1
// every half WatchdogSec while it is alive. Each call sends one datagram
// to $NOTIFY_SOCKET through go-systemd and is a no-op when the variable is
// unset (not under systemd). A send that fails is ignored: systemd is the
// only reader, and a process is not stopped for it. A status is free text
// for "systemctl status"; it must never carry a token.

// notifyReady tells systemd that startup is done: READY=1 and
// STATUS=status. Call it once the listener is bound (server) or the client
// runs, never before.
func notifyReady(status string) {
	sdNotify(daemon.SdNotifyReady, statusLine(status))
}

// notifyStatus sets the one-line status that "systemctl status" shows.
func notifyStatus(status string) {
	sdNotify(statusLine(status))
}

// notifyStopping tells systemd that the shutdown has begun (STOPPING=1).
func notifyStopping() {
	sdNotify(daemon.SdNotifyStopping)
}

// notifyReloading tells systemd that a reload has begun: RELOADING=1 with
// MONOTONIC_USEC, the time systemd 253+ requires to match the message to
// its reload job (Type=notify-reload). notifyReloaded ends it.
func notifyReloading() {
	sdNotify(daemon.SdNotifyReloading, strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// notifyReloaded ends a reload begun by notifyReloading: READY=1 and
// STATUS=status.
func notifyReloaded(status string) {
	sdNotify(daemon.SdNotifyReady, statusLine(status))
}

// runWatchdog pings systemd's watchdog (WATCHDOG=1) every half of the
// interval in WATCHDOG_USEC, as long as alive returns nil, until ctx ends.
// It returns at once when systemd watches no watchdog for this process
// (WatchdogSec= unset, or WATCHDOG_PID names another process).
//
// When alive fails, nothing is sent, so systemd kills and restarts the
// process once WatchdogSec passes; the failure is logged once at warn, and
// again only after alive has recovered and failed anew. An alive that
// blocks also stops the pings, which is what a wedged process should get.
// A failed send is logged once at debug. alive's error is logged as it is:
// it must not carry a secret. log nil means discard.
func runWatchdog(ctx context.Context, alive func() error, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("watchdog: bad environment, not pinging", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	w := watchdog{alive: alive, log: log}
	// The first ping goes now, not half an interval after READY=1.
	// WATCHDOG_USEC is at least 1, so interval/2 is never 0.
	w.ping()
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.ping()
		}
	}
}

// watchdog is the state of one runWatchdog loop, owned by its goroutine.
type watchdog struct {
	alive      func() error
	log        *slog.Logger
	dead       bool // alive failed last time: warned already
	sendFailed bool // a send failed: logged already
}

// ping sends WATCHDOG=1 if alive returns nil.
func (w *watchdog) ping() {
	if err := w.alive(); err != nil {
		if !w.dead {
			w.log.Warn("watchdog: not alive", "err", err)
		}
		w.dead = true
		return
	}
	w.dead = false
	if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil && !w.sendFailed {
		w.log.Debug("watchdog: cannot notify systemd", "err", err)
		w.sendFailed = true
	}
}

// sdNotify sends the assignments that are not empty as one datagram and
// ignores a failure.
func sdNotify(assignments ...string) {
	lines := make([]string, 0, len(assignments))
	for _, a := range assignments {
		if a != "" {
			lines = append(lines, a)
		}
	}
	_, _ = daemon.SdNotify(false, strings.Join(lines, "\n"))
}

// statusLine is STATUS=status on one line: a newline in status would start
// another assignment (a status "x\nREADY=1" must not say ready).
func statusLine(status string) string {
	return "STATUS=" + strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, status)
}

// startWatchdog runs runWatchdog with alive until the returned stop is
// called; stop waits for it.
func startWatchdog(alive func() error, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { runWatchdog(ctx, alive, log) })
	return func() {
		cancel()
		wg.Wait()
	}
}
