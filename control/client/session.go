package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/gotunnel-mux/gotunnel-mux/control"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// Reasons a client session ends, besides the connection dying.
var (
	errRegisterReply = errors.New("no register reply within handshake_timeout")
)

// errNoVisitorACL refuses, on this side, a mapping with allow_ips or
// deny_ips towards a server that does not enforce them.
var errNoVisitorACL = &control.RejectError{Code: control.CodeFeatureMissing,
	Reason: "the server does not enforce allow_ips and deny_ips (it is older than this client); not registered"}

// errNoUDP refuses, on this side, a UDP mapping towards a server that does
// not serve them: it would refuse the register as malformed and end the
// session.
var errNoUDP = &control.RejectError{Code: control.CodeFeatureMissing,
	Reason: "the server does not serve UDP mappings (it is older than this client); not registered"}

// regState is where one mapping stands in the current session.
type regState struct {
	sent       bool      // a register is in flight
	sentAt     time.Time // when it was queued
	sentOnline bool      // the online flag it carried, or the last one reported
	up         bool      // the server bound it
	port       int       // bound port when up
	answered   bool      // a reply has arrived at least once
	retryAt    time.Time // when a register goes (again); zero: never
	retryWait  time.Duration
	refusals   int                  // refusals in a row, for the log level
	refusal    *control.RejectError // the last refusal, until the mapping is up
}

// clientSession is one logged-in session on the client.
type clientSession struct {
	// set in newClientSession
	c        *Client
	link     *link         // its server
	retiring chan struct{} // closed by retire
	log      *slog.Logger
	mux      *mux.Session
	ctl      *mux.Stream
	ctx      context.Context
	cancel   context.CancelCauseFunc
	w        *control.Writer      // owns writes on ctl
	streams  *control.StreamTable // live data streams, for data_channel_reset
	wg       sync.WaitGroup
	healthy  atomic.Bool
	pinging  atomic.Bool  // a ping is queued and not written yet
	id       string       // the server's session ID
	since    time.Time    // the login
	pings    pings        // the last pings' send times
	rtt      atomic.Int64 // the last heartbeat round trip, nanoseconds
	ticked   atomic.Int64 // UnixNano of the heartbeat loop's last run, for Alive

	// The relays outlive the session: a stream whose FIN arrived is
	// delivered in full after the session died (protocol.md 7.6).
	relays      sync.WaitGroup     // this session's relays
	relayCtx    context.Context    // their parent: ends at a hard stop, or after the grace
	relayCancel context.CancelFunc // set in newClientSession

	unregisters bool // the server takes unregister (control.FeatureUnregister)
	visitorACL  bool // the server enforces register's visitor lists (control.FeatureVisitorACL)
	bandwidth   bool // the server enforces register.bandwidth (control.FeatureBandwidth)
	udp         bool // the server serves UDP mappings (control.FeatureUDP)

	mu          sync.Mutex // guards the fields below
	regs        map[string]*regState
	registering bool     // the first registers went: SetMappings' changes apply
	unregs      []string // unregisters that wait for room in the queue
}

func newClientSession(ctx context.Context, c *Client, l *link, ms *mux.Session, lr *loginResult) *clientSession {
	cs := &clientSession{
		c:           c,
		link:        l,
		retiring:    make(chan struct{}),
		log:         sessionLog(c, l, lr.sessionID),
		mux:         ms,
		ctl:         lr.ctl,
		regs:        make(map[string]*regState),
		id:          lr.sessionID,
		since:       time.Now(),
		unregisters: slices.Contains(lr.features, control.FeatureUnregister),
		visitorACL:  slices.Contains(lr.features, control.FeatureVisitorACL),
		bandwidth:   slices.Contains(lr.features, control.FeatureBandwidth),
		udp:         slices.Contains(lr.features, control.FeatureUDP),
	}
	cs.ctx, cs.cancel = context.WithCancelCause(context.Background())
	cs.relayCtx, cs.relayCancel = context.WithCancel(ctx)
	cs.w = control.NewWriter(lr.ctl, ms.Done(), cs.cancel)
	cs.streams = control.NewStreamTable(cs.w)
	cs.streams.HandledUpTo(lr.ctl.Consumed()) // the login reply
	return cs
}

// sessionLog is the session's logger: its lines name the session, and
// the server when the client has several.
func sessionLog(c *Client, l *link, id string) *slog.Logger {
	if len(c.links) > 1 {
		return c.log.With("session", id, "server", l.addr)
	}
	return c.log.With("session", id)
}

// serve runs the session until it ends and returns why. ctx ending ends it
// too (with context.Canceled); Shutdown makes it drain first.
func (cs *clientSession) serve(ctx context.Context) error {
	stopCtx := context.AfterFunc(ctx, func() { cs.cancel(context.Canceled) })
	defer stopCtx()
	stopMux := context.AfterFunc(cs.mux.Context(), func() { cs.cancel(context.Cause(cs.mux.Context())) })
	defer stopMux()
	if len(cs.c.links) > 1 {
		cs.log.Info("connected", "client", cs.c.opts.Name) // the logger names the server
	} else {
		cs.log.Info("connected", "server", cs.link.addr, "client", cs.c.opts.Name)
	}
	cs.wg.Go(cs.w.Run)
	cs.wg.Go(cs.readLoop)
	cs.wg.Go(cs.acceptLoop)
	cs.wg.Go(cs.heartbeatLoop)
	cs.registerAll()
	select {
	case <-cs.ctx.Done():
	case <-cs.c.stopping.Done():
		cs.drain()
		<-cs.ctx.Done()
	case <-cs.retiring:
		cs.drain()
		cs.waitIdle()
		cs.cancel(errMovedBack)
	}
	_ = cs.mux.Close()
	cs.wg.Wait()
	cs.c.wg.Go(cs.finishRelays)
	return context.Cause(cs.ctx)
}

// retire makes the session drain and end (HAFailover, back on a
// preferred server): no new visitors; the live ones go on for up to
// shutdown_timeout.
func (cs *clientSession) retire() {
	select {
	case <-cs.retiring:
	default:
		close(cs.retiring)
	}
}

// retired reports whether retire was called.
func (cs *clientSession) retired() bool {
	select {
	case <-cs.retiring:
		return true
	default:
		return false
	}
}

// waitIdle waits until the session has no live data stream, for at most
// shutdown_timeout, or until the session ends.
func (cs *clientSession) waitIdle() {
	ctx, cancel := context.WithTimeout(cs.ctx, max(cs.c.opts.ShutdownTimeout, 0))
	defer cancel()
	_ = pollUntil(ctx, 20*time.Millisecond, func() bool { return cs.streams.Len() == 0 })
}

// registerAll sends the session's first registers, one per mapping, and
// from then on lets SetMappings' changes apply to the session.
func (cs *clientSession) registerAll() {
	cs.c.mapMu.RLock()
	defer cs.c.mapMu.RUnlock()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.registering = true
	now := time.Now()
	for _, m := range cs.c.mappings {
		cs.regs[m.Name] = &regState{}
		cs.sendRegisterLocked(m, now)
	}
	cs.markHealthyLocked()
}

// finishRelays lets the relays of a session that ended finish on their
// own for up to shutdown_timeout (those whose stream had not finished
// have been reset already), then aborts the rest.
func (cs *clientSession) finishRelays() {
	done := make(chan struct{})
	go func() { // joined below
		cs.relays.Wait()
		close(done)
	}()
	t := time.NewTimer(max(cs.c.opts.ShutdownTimeout, 0))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-cs.relayCtx.Done():
	}
	cs.relayCancel()
	<-done
}

// drain tells the server that no mapping takes new visitors, once
// Shutdown has begun; openLocal refuses the data streams that still
// arrive, and live visitor connections go on.
func (cs *clientSession) drain() {
	cs.c.mapMu.RLock()
	defer cs.c.mapMu.RUnlock()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, m := range cs.c.mappings {
		if r := cs.regs[m.Name]; r != nil {
			cs.drainLocked(m, r)
		}
	}
	cs.log.Info("draining: no new visitors", "active", cs.streams.Len())
}

// drainLocked sends offline_port, draining, for m when it is up and the
// server takes visitors for it: at the drain, or when a register is
// answered after it. cs.mu is held.
func (cs *clientSession) drainLocked(m *clientMapping, r *regState) {
	if r.up && r.sentOnline {
		r.sentOnline = false
		cs.w.SendThen(&control.OfflinePort{Name: m.Name, Port: r.port, Draining: true}, nil)
	}
}

// readLoop handles the server's control frames until an error. After
// each frame it records how far it has got, for the data streams' ends.
func (cs *clientSession) readLoop() {
	defer cs.streams.StopReading()
	for {
		m, err := control.ReadFrame(cs.ctl)
		if err != nil {
			cs.cancel(fmt.Errorf("read control: %w", err))
			return
		}
		switch m := m.(type) {
		case *control.Pong:
			if d, ok := cs.pings.rtt(m.Time, time.Now()); ok {
				cs.rtt.Store(int64(d))
				cs.c.obs.HeartbeatRTT(d)
			}
		case *control.RegisterResp:
			cs.registered(m)
		case *control.DataChannelReset:
			cs.streams.Reset(m.Stream)
		case *control.ErrorMsg:
			cs.cancel(&control.RejectError{Code: m.Code, Reason: m.Reason})
			return
		default:
			cs.cancel(fmt.Errorf("%w: unexpected %s from server", control.ErrMalformed, m.Type()))
			return
		}
		cs.streams.HandledUpTo(cs.ctl.Consumed())
	}
}

// heartbeatLoop pings the server every heartbeat_interval, declares the
// session dead when nothing at all was read for heartbeat_timeout, bounds
// register replies, resends registers and health reports that are due,
// and releases idle buffers. It never blocks on the network.
func (cs *clientSession) heartbeatLoop() {
	o := &cs.c.opts
	t := time.NewTicker(cs.tick())
	defer t.Stop()
	var lastPing, lastShrink time.Time
	cs.ticked.Store(time.Now().UnixNano())
	for {
		select {
		case <-cs.ctx.Done():
			return
		case now := <-t.C:
			cs.ticked.Store(now.UnixNano())
			if now.Sub(cs.mux.LastRead()) > o.HeartbeatTimeout {
				cs.cancel(fmt.Errorf("%w: nothing read from the server for %s", control.ErrHeartbeatTimeout, o.HeartbeatTimeout))
				return
			}
			if now.Sub(lastPing) >= o.HeartbeatInterval {
				lastPing = cs.ping(now, lastPing)
			}
			if err := cs.checkRegs(now); err != nil {
				cs.cancel(err)
				return
			}
			if now.Sub(lastShrink) >= control.ShrinkEvery {
				lastShrink = now
				cs.streams.Shrink()
			}
		}
	}
}

// tick is the heartbeat loop's period.
func (cs *clientSession) tick() time.Duration {
	o := &cs.c.opts
	return max(min(o.HeartbeatInterval, o.HeartbeatTimeout/10), 10*time.Millisecond)
}

// ping queues a ping unless one is still waiting to be written: on a slow
// uplink a ping waits behind bulk data, and more of them would only queue
// up ahead of registers and reports. It returns when the last ping went.
func (cs *clientSession) ping(now, last time.Time) time.Time {
	if !cs.pinging.CompareAndSwap(false, true) {
		return last
	}
	p := &control.Ping{Time: now.UnixMilli(), RTT: time.Duration(cs.rtt.Load()).Microseconds()}
	cs.pings.add(p.Time, now)
	if !cs.w.TrySendThen(p, func() { cs.pinging.Store(false) }) {
		cs.pinging.Store(false) // the queue is full: the next tick tries again
		return last
	}
	return now
}

// checkRegs fails the session if a first register reply is overdue while
// the server is silent, sends the registers that are due, and reports
// probe verdicts that have not gone out yet.
//
// The first register of each mapping goes out before any data and is
// answered at once by a working server: one unanswered for
// handshake_timeout, with nothing at all read meanwhile, is a server that
// logged us in and hung. A retry is different: on a slow uplink it waits
// behind bulk data for as long as it takes, and only the heartbeat
// decides that a session is dead (protocol.md 5.6).
func (cs *clientSession) checkRegs(now time.Time) error {
	ht := cs.c.opts.HandshakeTimeout
	silent := now.Sub(cs.mux.LastRead()) > ht
	cs.c.mapMu.RLock()
	defer cs.c.mapMu.RUnlock()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	unregistered := cs.flushUnregsLocked()
	for _, m := range cs.c.mappings {
		r := cs.regs[m.Name]
		if r == nil || (!unregistered && slices.Contains(cs.unregs, m.Name)) {
			continue // not in this session yet, or its old self not unregistered yet
		}
		switch {
		case r.sent && !r.answered && now.Sub(r.sentAt) > ht && silent:
			return fmt.Errorf("%w (mapping %s)", errRegisterReply, m.Name)
		case !r.sent && !r.up && !r.retryAt.IsZero() && !now.Before(r.retryAt):
			cs.sendRegisterLocked(m, now)
		case r.up && !cs.c.stopped() && m.online.Load() != r.sentOnline:
			cs.reportLocked(m, r, m.online.Load())
		}
	}
	return nil
}

// sendRegisterLocked queues a register for m, or, when the queue is
// full, leaves it due for the next tick. cs.mu is held. A mapping that
// asks for any port (0) asks for the one it had in the last session.
func (cs *clientSession) sendRegisterLocked(m *clientMapping, now time.Time) {
	r := cs.regs[m.Name]
	var missing *control.RejectError
	switch {
	case m.hasLists() && !cs.visitorACL:
		// An older server would ignore the lists and let every visitor
		// through.
		missing = errNoVisitorACL
	case m.UDP && !cs.udp:
		missing = errNoUDP
	}
	if missing != nil {
		// The mapping stays down, and is not retried in this session.
		r.sent, r.answered, r.up, r.retryAt = false, true, false, time.Time{}
		cs.refusedLocked(m, r, missing)
		return
	}
	online := m.online.Load()
	reg := &control.Register{Name: m.Name, Protocol: m.protocol(), RemotePort: m.RemotePort, LocalAddr: m.LocalAddr, Online: online,
		AllowIPs: control.FormatPrefixes(m.AllowIPs), DenyIPs: control.FormatPrefixes(m.DenyIPs),
		UDPIdleTimeout: m.UDPIdleTimeout.Milliseconds()}
	if m.RemotePort == 0 {
		reg.PreferPort = cs.link.lastPort(m.Name, 0)
	}
	switch {
	case m.BandwidthLimit > 0 && cs.bandwidth:
		reg.Bandwidth = m.BandwidthLimit
	case m.BandwidthLimit > 0 && !r.answered:
		cs.log.Warn("the server does not limit bandwidth (it is older than this client): only the bytes from the local service are limited, not the visitors'",
			"mapping", m.Name, "bandwidth_limit", m.BandwidthLimit)
	}
	if !cs.w.TrySend(reg) {
		r.retryAt = now
		return
	}
	*r = regState{sent: true, sentAt: now, sentOnline: online, answered: r.answered, retryWait: r.retryWait, refusals: r.refusals, refusal: r.refusal}
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
func (cs *clientSession) registered(resp *control.RegisterResp) {
	m := cs.c.mapping(resp.Name)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	r := cs.regs[resp.Name]
	if m == nil || r == nil {
		cs.log.Debug("register reply for a mapping no longer configured", "mapping", resp.Name)
		return
	}
	r.sent, r.answered = false, true
	cs.markHealthyLocked()
	if resp.Status != control.StatusOK {
		// Also unasked, for a mapping that was up: the server no longer
		// allows its port (a reload there) and has closed it.
		r.up, r.port = false, 0
		cs.refusedLocked(m, r, &control.RejectError{Code: resp.Code, Reason: resp.Reason})
		return
	}
	r.up, r.port, r.retryAt, r.retryWait, r.refusals, r.refusal = true, resp.RemotePort, time.Time{}, 0, 0, nil
	if prev := cs.link.lastPort(m.Name, resp.RemotePort); m.RemotePort == 0 && prev != 0 && prev != resp.RemotePort {
		cs.log.Warn("mapping came back on a new port: its old port was taken or not allowed", "mapping", m.Name,
			"old_port", prev, "remote_port", resp.RemotePort)
	}
	// A server of a fleet names its public host: visitors use that one,
	// which need not be the host this client dialled.
	host := cmp.Or(resp.PublicHost, cs.link.host)
	cs.log.Info(fmt.Sprintf("%s  %s://%s -> %s", m.Name, m.protocol(), net.JoinHostPort(host, strconv.Itoa(resp.RemotePort)), m.LocalAddr),
		"mapping", m.Name, "remote_port", resp.RemotePort, "local_addr", m.LocalAddr)
	cs.c.emit(Event{Kind: EventMappingUp, Server: cs.link.addr, Mapping: m.Name, RemotePort: resp.RemotePort})
	switch on := m.online.Load(); {
	case cs.c.stopped():
		cs.drainLocked(m, r) // sentOnline is what the register told the server
	case on != r.sentOnline:
		cs.reportLocked(m, r, on)
	}
}

// refusedLocked logs a refused register (at warn the first time, then at
// debug: a 1004 is retried for as long as the session lives) and
// schedules a retry when the reason may clear (port in use, registry unreachable). cs.mu is
// held.
func (cs *clientSession) refusedLocked(m *clientMapping, r *regState, re *control.RejectError) {
	r.refusals++
	r.refusal = re
	cs.c.obs.Refused(re.Code)
	attrs := []any{"mapping", m.Name, "remote_port", m.RemotePort, "code", int(re.Code), "reason", re.Reason}
	switch {
	case !re.Code.Retried():
		cs.log.Error("mapping refused", attrs...)
	default:
		o := &cs.c.opts.Reconnect
		r.retryWait = min(max(2*r.retryWait, o.Min), o.Max)
		r.retryAt = time.Now().Add(r.retryWait)
		level := slog.LevelWarn
		if r.refusals > 1 {
			level = slog.LevelDebug
		}
		cs.log.Log(context.Background(), level, "mapping refused; retrying", append(attrs, "retry_in", r.retryWait.String(), "refusals", r.refusals)...)
	}
	cs.c.emit(Event{Kind: EventMappingFailed, Server: cs.link.addr, Mapping: m.Name, RemotePort: m.RemotePort, Err: re})
}

// healthChanged tells the server about a probe result change, for a
// mapping that is up in this session.
func (cs *clientSession) healthChanged(m *clientMapping, on bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if r := cs.regs[m.Name]; r != nil && r.up && r.sentOnline != on && !cs.c.stopped() {
		cs.reportLocked(m, r, on)
	}
}

// reportLocked queues online_port or offline_port; when the queue is
// full, checkRegs sends it on a later tick. cs.mu is held, so reports go
// out in the order the probe made them.
func (cs *clientSession) reportLocked(m *clientMapping, r *regState, on bool) {
	var msg control.Message = &control.OfflinePort{Name: m.Name, Port: r.port}
	if on {
		msg = &control.OnlinePort{Name: m.Name, Port: r.port}
	}
	if cs.w.TrySend(msg) {
		r.sentOnline = on
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
	ds := cs.streams.Open(st, time.Time{})
	ctx := cs.streams.Add(cs.relayCtx, ds)
	cs.c.live.Add(1)
	start := time.Now()
	local, hdr, m, re := cs.openLocal(ctx, ds)
	if re != nil {
		cs.c.obs.Refused(re.Code)
		ds.Refuse(re.Code, re.Reason, cs.c.opts.HandshakeTimeout)
		cs.streams.Remove(ds)
		cs.c.live.Add(-1)
		return
	}
	cs.c.obs.StreamOpened(time.Since(start))
	m.counters.visitors.Add(1)
	m.counters.active.Add(1)
	// A mapping removed by SetMappings cuts its visitors off after the
	// grace.
	rctx, cut := context.WithCancel(ctx)
	stopCut := context.AfterFunc(m.cut, cut)
	cs.relays.Go(func() {
		defer cs.c.live.Add(-1)
		defer m.counters.active.Add(-1)
		defer cs.streams.Remove(ds)
		defer cut()
		defer stopCut()
		var res dataplane.Result
		if m.UDP {
			res = cs.relayFlow(rctx, m, hdr, ds, local)
		} else {
			var lim dataplane.Limits
			if m.bandwidth != nil {
				lim.BToA = []*rate.Limiter{m.bandwidth} // the bytes read from the local service
			}
			res = dataplane.RelayWith(rctx, ds, local, cs.c.bufs, &m.counters.traffic, lim)
		}
		attrs := []any{"mapping", hdr.Name, "visitor", hdr.Visitor, "bytes_in", res.AToB, "bytes_out", res.BToA,
			"duration", time.Since(start).Round(time.Microsecond).String()}
		if res.Err != nil {
			attrs = append(attrs, "end", "aborted", "err", res.Err)
		} else {
			attrs = append(attrs, "end", "closed")
		}
		level := slog.LevelDebug
		if cs.c.opts.AccessLog {
			level = slog.LevelInfo
		}
		cs.log.Log(context.Background(), level, "visitor closed", attrs...)
	})
}

// openLocal reads ds's header, dials the mapping's local service, writes
// its PROXY protocol header if it has one, and acks.
// On error nothing is left open and the refusal to answer is returned.
func (cs *clientSession) openLocal(ctx context.Context, ds *control.DataStream) (net.Conn, *control.OpenDataChannel, *clientMapping, *control.RejectError) {
	o := &cs.c.opts
	_ = ds.SetReadDeadline(time.Now().Add(o.HandshakeTimeout))
	msg, err := control.ReadFrame(ds)
	_ = ds.SetReadDeadline(time.Time{})
	hdr, ok := msg.(*control.OpenDataChannel)
	if err != nil || !ok {
		cs.log.Warn("bad data stream header", "err", err)
		return nil, nil, nil, &control.RejectError{Code: control.CodeMalformed, Reason: "bad data stream header"}
	}
	m := cs.c.mapping(hdr.Name)
	switch {
	case m == nil:
		return nil, nil, nil, &control.RejectError{Code: control.CodeLocalUnreachable, Reason: "no mapping named " + hdr.Name}
	case cs.c.stopped() || cs.retired():
		return nil, nil, nil, &control.RejectError{Code: control.CodeMappingOffline, Reason: "the client is stopping"}
	case cmp.Or(hdr.Protocol, control.ProtocolTCP) != m.protocol():
		return nil, nil, nil, &control.RejectError{Code: control.CodeMalformed,
			Reason: fmt.Sprintf("mapping %s is %s, the stream is %s", m.Name, m.protocol(), cmp.Or(hdr.Protocol, control.ProtocolTCP))}
	}
	dctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	// A UDP "dial" connects a socket of this flow's own to the service:
	// nothing is sent, and a service that is down shows as datagrams
	// refused, counted by the relay.
	local, err := (&net.Dialer{}).DialContext(dctx, m.protocol(), m.LocalAddr)
	cancel()
	if err == nil && !m.UDP {
		// Before the ack, so before any of the visitor's bytes.
		if err = cs.writeProxyHeader(local, m, hdr, o.HandshakeTimeout); err != nil {
			dataplane.Reset(local)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			cs.localFailed(m, hdr, err)
		}
		return nil, nil, nil, &control.RejectError{Code: control.CodeLocalUnreachable, Reason: "local service unreachable"}
	}
	_ = ds.SetWriteDeadline(time.Now().Add(o.HandshakeTimeout))
	err = control.WriteFrame(ds, &control.DataChannelAck{Status: control.StatusOK})
	_ = ds.SetWriteDeadline(time.Time{})
	if err != nil {
		dataplane.Reset(local)
		return nil, nil, nil, &control.RejectError{Code: control.CodeLocalUnreachable, Reason: "ack not written"}
	}
	return local, hdr, m, nil
}

// localFailed logs, at most every 10 s per mapping and with a count, that
// a mapping's local service could not be dialled or its PROXY protocol
// header written.
func (cs *clientSession) localFailed(m *clientMapping, hdr *control.OpenDataChannel, err error) {
	m.dialFails.Add(1)
	m.dialWarn.Do(func() {
		cs.log.Warn("local service unreachable", "mapping", m.Name, "local_addr", m.LocalAddr, "visitor", hdr.Visitor,
			"code", int(control.CodeLocalUnreachable), "err", err, "count", m.dialFails.Swap(0))
	})
}
