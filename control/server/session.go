package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/gotunnel-mux/gotunnel-mux/control"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// errReplaced ends a server session taken over by a new login.
var errReplaced = errors.New("replaced by a new login with the same name")

// serverSession is one logged-in client on the server.
type serverSession struct {
	// set in newServerSession
	srv       *Server
	log       *slog.Logger
	id        string
	name      string
	clientID  string
	remote    string
	transport string // how the client came: tcp, tls, ws or wss
	mux       *mux.Session
	ctl       *mux.Stream
	ctx       context.Context // ends when the session must end; Cause says why
	cancel    context.CancelCauseFunc
	started   time.Time
	tokenSum  [sha256.Size]byte          // of the token it logged in with, for SetPolicy
	cred      atomic.Pointer[Credential] // the client's own credential; nil: the shared token
	rtt       atomic.Int64               // the client's last reported heartbeat round trip, microseconds
	bw        *clientBandwidth           // max_bandwidth_per_client's limiters of this name; set by run
	nameClaim FleetClaim                 // the name in the fleet's registry; set before login_resp, nil without a fleet

	w       *control.Writer      // owns writes on ctl once run starts
	streams *control.StreamTable // live data streams, for data_channel_reset

	drains sync.WaitGroup // removed mappings' listeners finishing their visitors; added to by readLoop, joined by run

	mu       sync.Mutex // guards mappings, refused and unbound
	mappings map[string]*mapping
	refused  map[string]refusal // the last refusal of each mapping name not bound, for the log level and status
	unbound  bool               // no more listeners may be bound
}

// refusal is a mapping's last refused registration.
type refusal struct {
	control.RejectError
	port      int
	localAddr string
	udp       bool
}

// mapping is one registered mapping with its public listener.
type mapping struct {
	name      string
	port      int
	localAddr string
	udp       bool          // a UDP mapping: its visitors are flows of udpIdle
	udpIdle   time.Duration // a UDP flow's idle timeout
	ln        *dataplane.Listener
	visitors  ipLists       // the mapping's own allow_ips and deny_ips
	bandwidth *rate.Limiter // the mapping's own limit on the bytes its visitors send (register.bandwidth); nil: none
	counters  *counters     // the mapping's, over every session
	claim     FleetClaim    // the port in the fleet's registry; nil without a fleet
	draining  atomic.Bool   // the client said it is stopping
}

func newServerSession(s *Server, ms *mux.Session, ctl *mux.Stream, l *control.Login, transport string) *serverSession {
	ss := &serverSession{
		srv:       s,
		id:        control.NewID(),
		name:      l.Name,
		clientID:  l.ClientID,
		transport: transport,
		tokenSum:  sha256.Sum256([]byte(l.Token)),
		remote:    ms.RemoteAddr().String(),
		mux:       ms,
		ctl:       ctl,
		started:   time.Now(),
		mappings:  make(map[string]*mapping),
		refused:   make(map[string]refusal),
	}
	ss.log = s.log.With("session", ss.id, "client", ss.name)
	ss.ctx, ss.cancel = context.WithCancelCause(context.Background())
	ss.w = control.NewWriter(ctl, ms.Done(), ss.cancel)
	ss.streams = control.NewStreamTable(ss.w)
	ss.streams.HandledUpTo(ctl.Consumed()) // the login
	return ss
}

// run serves the session until it ends, then frees everything it holds.
func (ss *serverSession) run() {
	old, err := ss.srv.reg.claim(ss)
	if err != nil {
		ss.releaseName()
		_ = ss.mux.Close()
		return
	}
	ss.bw = ss.srv.bw.acquire(ss.name)
	defer ss.srv.bw.release(ss.name, ss.bw)
	if old != nil {
		ss.takeOver(old)
	}
	ss.log.Info("client logged in", "remote", ss.remote, "client_id", ss.clientID)
	stop := context.AfterFunc(ss.mux.Context(), func() { ss.cancel(context.Cause(ss.mux.Context())) })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(ss.w.Run)
	wg.Go(ss.readLoop)
	<-ss.ctx.Done()
	cause := context.Cause(ss.ctx)
	if errors.Is(cause, mux.ErrStrayStreams) {
		ss.sendError(control.CodeMalformed, "client opened streams besides control")
	}
	ss.teardown(cause)
	wg.Wait()
	ss.drains.Wait() // after readLoop, the only one to add to it
	ss.logEnd(cause)
}

// takeOver ends the old session of the same name at once: its ports are
// free when this returns; the rest of its teardown runs in its own goroutine.
func (ss *serverSession) takeOver(old *serverSession) {
	quiet := time.Since(old.mux.LastRead())
	if quiet < ss.srv.opts.HeartbeatTimeout/3 {
		ss.log.Warn("client name taken over from a live session; two clients may share this name",
			"remote", ss.remote, "old_remote", old.remote, "old_session", old.id)
	} else {
		ss.log.Info("client name taken over", "remote", ss.remote, "old_remote", old.remote, "old_session", old.id)
	}
	old.kill(errReplaced)
}

// kill makes the session end: its ports are unbound before kill returns,
// and its own goroutine tears down the rest. It never blocks on the peer.
func (ss *serverSession) kill(cause error) {
	ss.unbind()
	ss.cancel(cause)
}

// unbind frees every mapping's port and forbids binding more.
func (ss *serverSession) unbind() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.unbound = true
	for _, m := range ss.mappings {
		_ = m.ln.Unbind()
		m.releasePort()
	}
}

// teardown closes the session: the connection first (blocked streams end;
// a visitor whose stream had not finished is reset), then every listener,
// then the registry entry. A visitor whose stream had finished (the
// client's FIN arrived) still gets what is buffered for it, for up to
// shutdown_timeout, unless the server itself is closing.
func (ss *serverSession) teardown(cause error) {
	ss.unbind()
	_ = ss.mux.Close()
	lns := ss.listeners()
	grace := max(ss.srv.opts.ShutdownTimeout, 0)
	if errors.Is(cause, ErrClosed) {
		grace = 0
	}
	ctx, cancel := context.WithTimeout(ss.srv.ctx, grace)
	defer cancel()
	for _, ln := range lns {
		_ = ln.Shutdown(ctx)
	}
	ss.srv.reg.release(ss)
	ss.releaseName()
}

// listeners are the public listeners of the session's mappings.
func (ss *serverSession) listeners() []*dataplane.Listener {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	lns := make([]*dataplane.Listener, 0, len(ss.mappings))
	for _, m := range ss.mappings {
		lns = append(lns, m.ln)
	}
	return lns
}

func (ss *serverSession) logEnd(cause error) {
	attrs := []any{"remote", ss.remote, "duration", time.Since(ss.started).Round(time.Millisecond).String()}
	switch {
	case errors.Is(cause, errReplaced), errors.Is(cause, ErrClosed), errors.Is(cause, mux.ErrSessionClosed):
		ss.log.Info("client session ended", append(attrs, "reason", cause.Error())...)
	default:
		ss.log.Warn("client session ended", append(attrs, "reason", cause.Error())...)
	}
}

// sendError tells the client why the server is about to close its
// session, waiting up to a second for the frame to go out.
func (ss *serverSession) sendError(code control.Code, reason string) {
	ss.w.Flush(&control.ErrorMsg{Code: code, Reason: reason}, time.Second)
}

// readLoop handles the client's control frames until an error.
func (ss *serverSession) readLoop() {
	defer ss.streams.StopReading()
	for {
		m, err := control.ReadFrameMax(ss.ctl, ss.srv.opts.MaxFrameSize)
		if err != nil {
			if code := control.CodeOf(err); code != 0 {
				ss.sendError(code, err.Error())
			}
			ss.cancel(fmt.Errorf("read control: %w", err))
			return
		}
		if err := ss.handle(m); err != nil {
			ss.cancel(err)
			return
		}
		ss.streams.HandledUpTo(ss.ctl.Consumed())
	}
}

func (ss *serverSession) handle(m control.Message) error {
	switch m := m.(type) {
	case *control.Register:
		ss.w.Send(ss.register(m))
	case *control.Ping:
		ss.w.Send(&control.Pong{Time: m.Time})
		if m.RTT > 0 {
			ss.rtt.Store(m.RTT)
			ss.srv.obs.HeartbeatRTT(time.Duration(m.RTT) * time.Microsecond)
		}
	case *control.OfflinePort:
		ss.setOnline(m.Name, m.Port, false, m.Draining)
	case *control.OnlinePort:
		ss.setOnline(m.Name, m.Port, true, false)
	case *control.Unregister:
		ss.unregister(m.Name)
	case *control.DataChannelReset:
		ss.streams.Reset(m.Stream)
	default:
		ss.sendError(control.CodeMalformed, "unexpected "+m.Type())
		return fmt.Errorf("%w: unexpected %s", control.ErrMalformed, m.Type())
	}
	return nil
}

// register binds a public port for one mapping; every outcome is a reply.
func (ss *serverSession) register(r *control.Register) *control.RegisterResp {
	m, err := ss.bind(r)
	if err != nil {
		var re *control.RejectError
		errors.As(err, &re)
		ss.srv.obs.Refused(re.Code)
		level := slog.LevelWarn
		if ss.refusedBefore(r, re) {
			level = slog.LevelDebug // the client retries a 1004 for as long as the session lives
		}
		ss.log.Log(context.Background(), level, "mapping refused", "mapping", r.Name, "remote_port", r.RemotePort, "code", int(re.Code), "reason", re.Reason)
		return &control.RegisterResp{Status: control.StatusFail, Code: re.Code, Reason: re.Reason, Name: r.Name, RemotePort: r.RemotePort,
			PublicHost: refusalHost(err)}
	}
	m.ln.SetOnline(r.Online)
	attrs := []any{"mapping", m.name, "remote_port", m.port, "local_addr", m.localAddr, "online", r.Online}
	if m.udp {
		attrs = append(attrs, "protocol", control.ProtocolUDP, "udp_idle_timeout", m.udpIdle.String())
	}
	if !m.visitors.empty() {
		attrs = append(attrs, "allow_ips", len(m.visitors.allow), "deny_ips", len(m.visitors.deny))
	}
	if r.Bandwidth > 0 {
		attrs = append(attrs, "bandwidth", r.Bandwidth)
	}
	ss.log.Info("mapping up", attrs...)
	return &control.RegisterResp{Status: control.StatusOK, Name: m.name, RemotePort: m.port, PublicHost: ss.srv.publicHost()}
}

// bind checks the limits and binds the port; errors are *RejectError.
func (ss *serverSession) bind(r *control.Register) (*mapping, error) {
	visitors, err := registerLists(r)
	if err != nil {
		return nil, err
	}
	pol, cred := ss.srv.pol.Load(), ss.cred.Load()
	ports, most := pol.ports(cred), pol.maxMappings(cred)
	if err := ss.bindable(r, ports, most, cred); err != nil {
		return nil, err
	}
	udp := r.Protocol == control.ProtocolUDP
	cnt := ss.srv.tally.of(ss.name, r.Name)
	// Not under ss.mu: in a fleet, listen waits on the registry, and
	// kill (a takeover, the sweep) must not wait on it.
	ln, port, claim, err := ss.listen(ports, r, udp, cnt.dropDatagram)
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.unbound { // killed meanwhile
		_ = ln.Close()
		if claim != nil {
			claim.Release()
		}
		return nil, &control.RejectError{Code: control.CodePortInUse, Reason: "session is closing"}
	}
	delete(ss.refused, r.Name)
	m := &mapping{name: r.Name, localAddr: r.LocalAddr, port: port, visitors: visitors, udp: udp,
		bandwidth: dataplane.NewLimiter(r.Bandwidth), counters: cnt, claim: claim}
	maxConns := pol.MaxConnsPerMapping
	if udp {
		m.udpIdle = cmp.Or(time.Duration(r.UDPIdleTimeout)*time.Millisecond, DefaultUDPIdleTimeout)
		maxConns = pol.MaxUDPFlowsPerMapping
	}
	m.ln = dataplane.Serve(ln, ss.visitorHandler(m), dataplane.Options{
		MaxConns: maxConns,
		Logger:   ss.log.With("mapping", m.name),
		Reset: func(offline bool) {
			m.counters.resets.Add(1)
			if offline {
				ss.srv.obs.Refused(control.CodeMappingOffline)
			}
		},
		Admit:  func(visitor net.Addr) bool { return ss.admit(m, visitor) },
		Header: ss.visitorHeader(m),
	})
	ss.mappings[m.name] = m
	return m, nil
}

// bindable checks a register against the session's state and the
// client's limits; errors are *RejectError.
func (ss *serverSession) bindable(r *control.Register, ports []PortRange, most int, cred *Credential) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	switch {
	case ss.unbound:
		return &control.RejectError{Code: control.CodePortInUse, Reason: "session is closing"}
	case ss.mappings[r.Name] != nil:
		return &control.RejectError{Code: control.CodeDuplicateName, Reason: fmt.Sprintf("mapping %q is already registered", r.Name)}
	case len(ss.mappings) >= most:
		return &control.RejectError{Code: control.CodeTooManyMappings, Reason: fmt.Sprintf("at most %d mappings for this client", most)}
	case len(ports) == 0:
		return &control.RejectError{Code: control.CodePortNotAllowed, Reason: "no port is allowed for this client"}
	case r.RemotePort != 0 && !allowed(ports, r.RemotePort):
		return &control.RejectError{Code: control.CodePortNotAllowed, Reason: portsReason(r.RemotePort, cred)}
	}
	return nil
}

// registerLists reads a register's visitor lists; an entry that does not
// parse refuses the mapping with 1007, naming the field.
func registerLists(r *control.Register) (ipLists, error) {
	allow, err := control.ParsePrefixes("allow_ips", r.AllowIPs)
	if err == nil {
		var deny []netip.Prefix
		deny, err = control.ParsePrefixes("deny_ips", r.DenyIPs)
		if err == nil {
			return ipLists{allow: allow, deny: deny}, nil
		}
	}
	return ipLists{}, &control.RejectError{Code: control.CodeMalformed, Reason: err.Error()}
}

// admit is m's door: the visitor passes the server's lists in force now
// (a reload applies to the next visitor) and the mapping's, or is counted
// and reset by the listener before any stream is opened.
func (ss *serverSession) admit(m *mapping, visitor net.Addr) bool {
	if visitorAdmitted(ss.srv.pol.Load().visitors, m.visitors, visitor) {
		return true
	}
	m.counters.denied.Add(1)
	return false
}

// refusedBefore reports whether the last register of r's mapping in this
// session was refused with the same code, and remembers this refusal.
// ss.mu is not held.
func (ss *serverSession) refusedBefore(r *control.Register, re *control.RejectError) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	before := ss.refused[r.Name].Code == re.Code
	ss.refused[r.Name] = refusal{RejectError: *re, port: r.RemotePort, localAddr: r.LocalAddr, udp: r.Protocol == control.ProtocolUDP}
	return before
}

// listen binds r's port on public_addr, or when it is 0 the preferred
// port (the one the mapping had before a reconnect) if it is allowed and
// free, else a random free port of allow_ports: a TCP port, or with udp a
// UDP one. In a fleet a port bound here must also be held by no other
// server: it is claimed in the registry, and one held elsewhere is closed
// again (for remote_port 0, another port is tried). It returns the
// listener, the port bound and its claim (nil without a fleet).
func (ss *serverSession) listen(ports []PortRange, r *control.Register, udp bool, dropped func()) (net.Listener, int, FleetClaim, error) {
	bind := func(p int) (net.Listener, int, error) {
		addr := net.JoinHostPort(ss.srv.opts.PublicAddr, strconv.Itoa(p))
		if udp {
			ua, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return nil, 0, err
			}
			pc, err := net.ListenUDP("udp", ua)
			if err != nil {
				return nil, 0, err
			}
			return dataplane.ListenUDP(pc, dropped), pc.LocalAddr().(*net.UDPAddr).Port, nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, 0, err
		}
		return ln, ln.Addr().(*net.TCPAddr).Port, nil
	}
	proto := control.ProtocolTCP
	if udp {
		proto = control.ProtocolUDP
	}
	// held binds p and claims it in the fleet; bound reports whether the
	// local bind worked (a claim refused closes the listener again).
	held := func(p int) (ln net.Listener, port int, claim FleetClaim, bound bool, err error) {
		ln, port, err = bind(p)
		if err != nil {
			return nil, 0, nil, false, err
		}
		if claim, err = ss.holdPort(proto, port, r.Name); err != nil {
			_ = ln.Close()
			return nil, 0, nil, true, holdRefusal(err)
		}
		return ln, port, claim, true, nil
	}
	if port, prefer := r.RemotePort, r.PreferPort; port == 0 && prefer != 0 && allowed(ports, prefer) {
		ln, p, claim, _, err := held(prefer)
		if err == nil {
			return ln, p, claim, nil
		}
		if control.CodeOf(err) == control.CodeRegistryDown {
			return nil, 0, nil, err
		}
	}
	if r.RemotePort != 0 {
		ln, p, claim, bound, err := held(r.RemotePort)
		if err != nil && !bound {
			err = bindError(r.RemotePort, err)
		}
		return ln, p, claim, err
	}
	for range pickAttempts {
		ln, p, claim, _, err := held(randomPort(ports))
		if err == nil {
			return ln, p, claim, nil
		}
		if control.CodeOf(err) == control.CodeRegistryDown {
			return nil, 0, nil, err
		}
	}
	return nil, 0, nil, &control.RejectError{Code: control.CodePortInUse, Reason: errNoFreePort.Error()}
}

// portsReason says why port is refused: outside the server's
// allow_ports, or outside the client's own.
func portsReason(port int, cred *Credential) string {
	if cred != nil && len(cred.AllowPorts) > 0 {
		return fmt.Sprintf("port %d is outside this client's allow_ports", port)
	}
	return fmt.Sprintf("port %d is outside allow_ports", port)
}

func bindError(port int, err error) *control.RejectError {
	if errors.Is(err, syscall.EACCES) {
		return &control.RejectError{Code: control.CodePortNotAllowed, Reason: fmt.Sprintf("port %d: permission denied on the server", port)}
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return &control.RejectError{Code: control.CodePortInUse, Reason: fmt.Sprintf("port %d is in use", port)}
	}
	return &control.RejectError{Code: control.CodePortInUse, Reason: fmt.Sprintf("port %d: %v", port, errors.Unwrap(err))}
}

func (ss *serverSession) setOnline(name string, port int, on, draining bool) {
	ss.mu.Lock()
	m := ss.mappings[name]
	ss.mu.Unlock()
	if m == nil || m.port != port {
		ss.log.Warn("health report for an unknown mapping", "mapping", name, "remote_port", port)
		return
	}
	m.draining.Store(draining)
	if m.ln.Online() == on {
		return
	}
	m.ln.SetOnline(on)
	switch {
	case on:
		ss.log.Info("mapping online", "mapping", name, "remote_port", port)
	case draining:
		ss.log.Info("mapping draining: the client is stopping", "mapping", name, "remote_port", port, "active", m.ln.Active())
	default:
		ss.log.Warn("mapping offline: local service down on the client", "mapping", name, "remote_port", port, "code", int(control.CodeMappingOffline))
	}
}

// unregister removes a mapping the client no longer has (a reload): its
// port is free when this returns, so that a register that follows may
// bind it again; its live visitors go on for up to shutdown_timeout.
func (ss *serverSession) unregister(name string) {
	ss.mu.Lock()
	m := ss.mappings[name]
	delete(ss.mappings, name)
	delete(ss.refused, name)
	if m != nil {
		_ = m.ln.Unbind()
		m.releasePort()
	}
	ss.mu.Unlock()
	if m == nil {
		ss.log.Debug("unregister of a mapping not bound", "mapping", name)
		return
	}
	ss.log.Info("mapping removed by the client", "mapping", name, "remote_port", m.port, "active", m.ln.Active())
	ss.drains.Go(func() {
		ctx, cancel := context.WithTimeout(ss.ctx, max(ss.srv.opts.ShutdownTimeout, 0))
		defer cancel()
		if ss.srv.opts.ShutdownTimeout < 0 {
			cancel()
		}
		if err := m.ln.Shutdown(ctx); err != nil && ss.ctx.Err() == nil {
			ss.log.Info("removed mapping's visitors cut off", "mapping", name, "remote_port", m.port, "err", err)
		}
	})
}

func (ss *serverSession) activeVisitors() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := 0
	for _, m := range ss.mappings {
		n += m.ln.Active()
	}
	return n
}
