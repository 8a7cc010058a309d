package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// Reasons a client session ends, besides the connection dying.
var (
	errRegisterReply = errors.New("no register reply within handshake_timeout")
)

// regState is where one mapping stands in the current session.
type regState struct {
	sent       bool      // a register is in flight
	sentAt     time.Time // when it was sent
	sentOnline bool      // the online flag it carried, or the last one reported
	up         bool      // the server bound it
	port       int       // bound port when up
	answered   bool      // a reply has arrived at least once
	retryAt    time.Time // when a refused-but-retryable register goes again; zero: never
	retryWait  time.Duration
}

// clientSession is one logged-in session on the client.
type clientSession struct {
	// set in newClientSession
	c       *Client
	log     *slog.Logger
	mux     *mux.Session
	ctl     *mux.Stream
	ctx     context.Context
	cancel  context.CancelCauseFunc
	w       *ctlWriter   // owns writes on ctl
	streams *streamTable // live data streams, for data_channel_reset
	wg      sync.WaitGroup
	healthy atomic.Bool

	mu   sync.Mutex // guards regs
	regs map[string]*regState
}

func newClientSession(c *Client, ms *mux.Session, lr *loginResult) *clientSession {
	cs := &clientSession{
		c:       c,
		log:     c.log.With("session", lr.sessionID),
		mux:     ms,
		ctl:     lr.ctl,
		streams: newStreamTable(),
		regs:    make(map[string]*regState, len(c.mappings)),
	}
	cs.ctx, cs.cancel = context.WithCancelCause(context.Background())
	cs.w = newCtlWriter(lr.ctl, ms.Done(), cs.cancel)
	for _, m := range c.mappings {
		cs.regs[m.Name] = &regState{}
	}
	return cs
}

// serve runs the session until it ends and returns why. ctx ending ends it
// too (with context.Canceled).
func (cs *clientSession) serve(ctx context.Context) error {
	stopCtx := context.AfterFunc(ctx, func() { cs.cancel(context.Canceled) })
	defer stopCtx()
	stopMux := context.AfterFunc(cs.mux.Context(), func() { cs.cancel(context.Cause(cs.mux.Context())) })
	defer stopMux()
	cs.log.Info("connected", "server", cs.c.opts.ServerAddr, "client", cs.c.opts.Name)
	cs.wg.Go(cs.w.run)
	cs.wg.Go(cs.readLoop)
	cs.wg.Go(cs.acceptLoop)
	cs.wg.Go(cs.heartbeatLoop)
	cs.mu.Lock()
	for _, m := range cs.c.mappings {
		cs.sendRegisterLocked(m, time.Now())
	}
	cs.markHealthyLocked()
	cs.mu.Unlock()
	<-cs.ctx.Done()
	_ = cs.mux.Close()
	cs.wg.Wait()
	cs.w.wait()
	return context.Cause(cs.ctx)
}

// readLoop handles the server's control frames until an error.
func (cs *clientSession) readLoop() {
	for {
		m, err := ReadFrame(cs.ctl)
		if err != nil {
			cs.cancel(fmt.Errorf("read control: %w", err))
			return
		}
		switch m := m.(type) {
		case *Pong:
		case *RegisterResp:
			cs.registered(m)
		case *DataChannelReset:
			cs.streams.reset(m.Stream)
		case *ErrorMsg:
			cs.cancel(&RejectError{Code: m.Code, Reason: m.Reason})
			return
		default:
			cs.cancel(fmt.Errorf("%w: unexpected %s from server", ErrMalformed, m.Type()))
			return
		}
	}
}

// heartbeatLoop pings the server every heartbeat_interval, declares the
// session dead when nothing at all was read for heartbeat_timeout, bounds
// register replies by handshake_timeout, and resends retryable registers.
// It never blocks on the network.
func (cs *clientSession) heartbeatLoop() {
	o := &cs.c.opts
	tick := max(min(o.HeartbeatInterval, o.HeartbeatTimeout/10), 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var lastPing, lastShrink time.Time
	for {
		select {
		case <-cs.ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(cs.mux.LastRead()) > o.HeartbeatTimeout {
				cs.cancel(fmt.Errorf("%w: nothing read from the server for %s", ErrHeartbeatTimeout, o.HeartbeatTimeout))
				return
			}
			if now.Sub(lastPing) >= o.HeartbeatInterval && cs.w.trySend(&Ping{Time: now.UnixMilli()}) {
				lastPing = now // else the queue is full; the next tick tries again
			}
			if err := cs.checkRegs(now); err != nil {
				cs.cancel(err)
				return
			}
			if now.Sub(lastShrink) >= shrinkEvery {
				lastShrink = now
				cs.streams.shrink()
			}
		}
	}
}

// checkRegs fails the session if a register went unanswered, and resends
// the registers whose retry time has come.
func (cs *clientSession) checkRegs(now time.Time) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, m := range cs.c.mappings {
		r := cs.regs[m.Name]
		switch {
		case r.sent && now.Sub(r.sentAt) > cs.c.opts.HandshakeTimeout:
			return fmt.Errorf("%w (mapping %s)", errRegisterReply, m.Name)
		case !r.sent && !r.up && !r.retryAt.IsZero() && !now.Before(r.retryAt):
			cs.sendRegisterLocked(m, now)
		}
	}
	return nil
}

// sendRegisterLocked queues a register for m. cs.mu is held.
func (cs *clientSession) sendRegisterLocked(m *clientMapping, now time.Time) {
	r := cs.regs[m.Name]
	online := m.online.Load()
	*r = regState{sent: true, sentAt: now, sentOnline: online, answered: r.answered, retryWait: r.retryWait}
	cs.w.queue(&Register{Name: m.Name, Protocol: ProtocolTCP, RemotePort: m.RemotePort, LocalAddr: m.LocalAddr, Online: online})
}

// markHealthyLocked marks the session healthy once every mapping's first
// register was answered. cs.mu is held.
func (cs *clientSession) markHealthyLocked() {
	for _, r := range cs.regs {
		if !r.answered {
			return
		}
	}
	cs.healthy.Store(true)
}

// registered handles a register reply.
func (cs *clientSession) registered(resp *RegisterResp) {
	m := cs.c.byName[resp.Name]
	if m == nil {
		cs.log.Warn("register reply for an unknown mapping", "mapping", resp.Name)
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	r := cs.regs[m.Name]
	r.sent, r.answered = false, true
	cs.markHealthyLocked()
	if resp.Status != StatusOK {
		cs.refusedLocked(m, r, &RejectError{Code: resp.Code, Reason: resp.Reason})
		return
	}
	r.up, r.port, r.retryAt, r.retryWait = true, resp.RemotePort, time.Time{}, 0
	cs.log.Info(fmt.Sprintf("%s  tcp://%s -> %s", m.Name, net.JoinHostPort(cs.c.host, strconv.Itoa(resp.RemotePort)), m.LocalAddr),
		"mapping", m.Name, "remote_port", resp.RemotePort, "local_addr", m.LocalAddr)
	cs.c.emit(Event{Kind: EventMappingUp, Mapping: m.Name, RemotePort: resp.RemotePort})
	if on := m.online.Load(); on != r.sentOnline {
		cs.reportLocked(m, r, on)
	}
}

// refusedLocked logs a refused register once and schedules a retry when
// the reason may clear (port in use). cs.mu is held.
func (cs *clientSession) refusedLocked(m *clientMapping, r *regState, re *RejectError) {
	attrs := []any{"mapping", m.Name, "remote_port", m.RemotePort, "code", int(re.Code), "reason", re.Reason}
	if re.Code == CodePortInUse {
		o := &cs.c.opts.Reconnect
		r.retryWait = min(max(2*r.retryWait, o.Min), o.Max)
		r.retryAt = time.Now().Add(r.retryWait)
		cs.log.Warn("mapping refused; retrying", append(attrs, "retry_in", r.retryWait.String())...)
	} else {
		cs.log.Error("mapping refused", attrs...)
	}
	cs.c.emit(Event{Kind: EventMappingFailed, Mapping: m.Name, RemotePort: m.RemotePort, Err: re})
}

// healthChanged tells the server about a probe result change, for a
// mapping that is up in this session.
func (cs *clientSession) healthChanged(m *clientMapping, on bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if r := cs.regs[m.Name]; r.up && r.sentOnline != on {
		cs.reportLocked(m, r, on)
	}
}

// reportLocked queues online_port or offline_port. cs.mu is held.
func (cs *clientSession) reportLocked(m *clientMapping, r *regState, on bool) {
	r.sentOnline = on
	if on {
		cs.w.queue(&OnlinePort{Name: m.Name, Port: r.port})
	} else {
		cs.w.queue(&OfflinePort{Name: m.Name, Port: r.port})
	}
}

// acceptLoop hands every data stream to its own goroutine at once: a
// stream left waiting would stall the server's opens.
func (cs *clientSession) acceptLoop() {
	for {
		st, err := cs.mux.Accept()
		if err != nil {
			return
		}
		cs.wg.Go(func() { cs.serveStream(st) })
	}
}

// serveStream reads a data stream's header, dials the local service and
// acks; the relay then runs in a goroutine of its own. It owns st.
//
// The hand-over is for memory: decoding the header and dialling grow this
// goroutine's stack, and a relay that then sits idle for hours would keep
// it. Measured with 1,000 idle visitors: 7 KiB less stack per visitor.
func (cs *clientSession) serveStream(st *mux.Stream) {
	ds := &dataStream{streamConn: st, id: st.StreamID(), send: cs.w.queue}
	ctx := cs.streams.add(cs.ctx, ds)
	start := time.Now()
	local, hdr, err := cs.openLocal(ctx, st)
	if err != nil {
		cs.streams.remove(ds)
		return
	}
	cs.wg.Go(func() {
		defer cs.streams.remove(ds)
		res := dataplane.RelayWith(ctx, ds, local, cs.c.bufs)
		attrs := []any{"mapping", hdr.Name, "visitor", hdr.Visitor, "bytes_in", res.AToB, "bytes_out", res.BToA,
			"duration", time.Since(start).Round(time.Microsecond).String()}
		if res.Err != nil {
			attrs = append(attrs, "err", res.Err)
		}
		cs.log.Debug("visitor closed", attrs...)
	})
}

// openLocal reads st's header, dials the mapping's local service and acks.
// On error st is answered and closed, and nothing is left open.
func (cs *clientSession) openLocal(ctx context.Context, st *mux.Stream) (net.Conn, *OpenDataChannel, error) {
	o := &cs.c.opts
	_ = st.SetReadDeadline(time.Now().Add(o.HandshakeTimeout))
	msg, err := ReadFrame(st)
	_ = st.SetReadDeadline(time.Time{})
	hdr, ok := msg.(*OpenDataChannel)
	if err != nil || !ok {
		cs.log.Warn("bad data stream header", "err", err)
		_ = st.Close()
		return nil, nil, ErrMalformed
	}
	m := cs.c.byName[hdr.Name]
	if m == nil {
		cs.nack(st, CodeLocalUnreachable, "no mapping named "+hdr.Name)
		return nil, nil, errors.New("no such mapping")
	}
	dctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	local, err := (&net.Dialer{}).DialContext(dctx, "tcp", m.LocalAddr)
	cancel()
	if err != nil {
		if n, ok := m.dialWarn.allow(10 * time.Second); ok {
			cs.log.Warn("local service unreachable", "mapping", m.Name, "local_addr", m.LocalAddr, "visitor", hdr.Visitor,
				"code", int(CodeLocalUnreachable), "err", err, "count", n)
		}
		cs.nack(st, CodeLocalUnreachable, "local service unreachable")
		return nil, nil, err
	}
	if err := WriteFrame(st, &DataChannelAck{Status: StatusOK}); err != nil {
		_ = local.Close()
		_ = st.Close()
		return nil, nil, err
	}
	return local, hdr, nil
}

// nack refuses a data stream with code and closes it.
func (cs *clientSession) nack(st *mux.Stream, code Code, reason string) {
	_ = st.SetWriteDeadline(time.Now().Add(cs.c.opts.HandshakeTimeout))
	_ = WriteFrame(st, &DataChannelAck{Status: StatusFail, Code: code, Reason: reason})
	_ = st.Close()
}
