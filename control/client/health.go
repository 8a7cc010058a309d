package client

import (
	"context"
	"net"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
)

// probeLoop dials m's local service every health.interval for as long as
// the client runs. After health.failures failures in a row the mapping is
// offline; the first success after that brings it online. The state
// outlives sessions and goes out with each register.
func (c *Client) probeLoop(ctx context.Context, m *clientMapping) {
	h := &c.opts.Health
	failures := 0
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := probe(ctx, m.LocalAddr, h.Timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			c.setOnline(m, true, nil)
		} else if failures++; failures >= h.Failures {
			c.setOnline(m, false, err)
		}
		t.Reset(h.Interval)
	}
}

// probe dials addr once and closes the connection at once.
func probe(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// setOnline records a probe verdict and, on a change, logs it, reports it
// to the server through the current session and emits an event.
func (c *Client) setOnline(m *clientMapping, on bool, err error) {
	if m.online.Swap(on) == on {
		return
	}
	if on {
		c.log.Info("mapping online: local service answers again", "mapping", m.Name, "local_addr", m.LocalAddr)
		c.emit(Event{Kind: EventMappingOnline, Mapping: m.Name})
	} else {
		c.log.Warn("mapping offline: local service down", "mapping", m.Name, "local_addr", m.LocalAddr, "code", int(control.CodeMappingOffline), "err", err)
		c.emit(Event{Kind: EventMappingOffline, Mapping: m.Name, Err: err})
	}
	for _, cs := range c.sessions() {
		cs.healthChanged(m, on)
	}
}
