package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
)

// A fleet is several servers that share one registry ([cluster] in
// server.toml; the registry is etcd, in package fleet below this one).
// The server asks the registry before it answers a login (the client's
// name) and before it answers a registration (the port), and lets go of
// both when the session or the mapping ends. Without Options.Fleet none
// of this runs.

// Fleet is the registry that the servers of a fleet share. Its methods
// are called from the server's goroutines; each wait on the registry is
// bounded by the Fleet itself (registry_timeout), after which the call
// fails with ErrRegistryDown.
type Fleet interface {
	// ClaimName records that this server holds the client name for
	// session, taking it from any server of the fleet that held it.
	// lost is called once, from the Fleet's own goroutine, if another
	// server takes the name later.
	ClaimName(ctx context.Context, name, session string, lost func(by FleetHolder)) (FleetClaim, error)
	// ClaimPort records that this server holds port (protocol "tcp" or
	// "udp") for the client's mapping, unless another server of the
	// fleet holds it: then it fails with a *PortHeldError. A port held
	// elsewhere by an older session of the same client, whose name this
	// server holds now, is taken over. lost is called once if the
	// registry is later found to have given the port to another server
	// (after an outage in which this server's lease ran out).
	ClaimPort(ctx context.Context, protocol string, port int, client, mapping string, lost func(by FleetHolder)) (FleetClaim, error)
	// PublicHost is the host name visitors use to reach this server.
	PublicHost() string
	// Status reads the whole fleet from the registry.
	Status(ctx context.Context) (FleetStatus, error)
}

// FleetClaim is a name or a port held in the registry.
type FleetClaim interface {
	// Release lets go of the claim at once; the registry is told in the
	// background. It is idempotent and never blocks on the registry.
	Release()
}

// FleetHolder is the server of the fleet that holds a name or a port.
type FleetHolder struct {
	Server     string // its [cluster] name
	PublicHost string
}

// ErrRegistryDown is a Fleet's answer when the registry did not answer
// within its bound: the login or the registration is refused with 1014.
var ErrRegistryDown = errors.New("server: the fleet's registry is unreachable")

// PortHeldError refuses a port that another server of the fleet holds.
type PortHeldError struct {
	Protocol string
	Port     int
	By       FleetHolder
}

func (e *PortHeldError) Error() string {
	return fmt.Sprintf("port %d is held by server %s (%s)", e.Port, e.By.Server, e.By.PublicHost)
}

// FleetStatus is the fleet as the registry has it.
type FleetStatus struct {
	Servers []FleetServer // by name
	Clients []FleetName   // by name
	Ports   []FleetPort   // by protocol and port
}

// FleetServer is a live server of the fleet.
type FleetServer struct {
	Name, PublicHost, BindAddr, Version string
	Since                               time.Time
}

// FleetName is a client name and the server that holds it.
type FleetName struct {
	Name, Server, Session string
	Since                 time.Time
}

// FleetPort is a public port and the server that holds it.
type FleetPort struct {
	Protocol                string
	Port                    int
	Server, Client, Mapping string
	Since                   time.Time
}

// FleetStatus reads the fleet from the registry; nil without a fleet.
func (s *Server) FleetStatus(ctx context.Context) (*FleetStatus, error) {
	if s.opts.Fleet == nil {
		return nil, nil
	}
	st, err := s.opts.Fleet.Status(ctx)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// publicHost is the host a register_resp names: the fleet's, or none.
func (s *Server) publicHost() string {
	if s.opts.Fleet == nil {
		return ""
	}
	return s.opts.Fleet.PublicHost()
}

// registryDown is the refusal of a login or registration that the
// registry did not answer in time.
var registryDown = &control.RejectError{Code: control.CodeRegistryDown, Reason: control.CodeRegistryDown.String()}

// claimName records ss's name in the fleet before its login is answered:
// a server of the fleet that held the name closes its session. Later, a
// login on another server ends ss the same way. Without a fleet it does
// nothing.
func (s *Server) claimName(ss *serverSession) *control.RejectError {
	if s.opts.Fleet == nil {
		return nil
	}
	claim, err := s.opts.Fleet.ClaimName(s.ctx, ss.name, ss.id, func(by FleetHolder) {
		ss.log.Info("client name taken over by a login on another server of the fleet", "server", by.Server)
		ss.kill(fmt.Errorf("%w on server %s", errReplaced, by.Server))
	})
	if err != nil {
		return registryDown
	}
	ss.nameClaim = claim
	return nil
}

// releaseName lets go of the session's name in the fleet.
func (ss *serverSession) releaseName() {
	if ss.nameClaim != nil {
		ss.nameClaim.Release()
	}
}

// holdPort records a port just bound on this server in the fleet; on a
// refusal the caller closes the listener. Without a fleet it does
// nothing.
func (ss *serverSession) holdPort(protocol string, port int, mapping string) (FleetClaim, error) {
	f := ss.srv.opts.Fleet
	if f == nil {
		return nil, nil
	}
	return f.ClaimPort(ss.srv.ctx, protocol, port, ss.name, mapping, func(by FleetHolder) { ss.portLost(protocol, port, by) })
}

// fleetRefusal is a refusal for a port held by another server of the
// fleet: the register_resp names that server's public host.
type fleetRefusal struct {
	*control.RejectError
	host string
}

func (f *fleetRefusal) Unwrap() error { return f.RejectError }

// holdRefusal turns holdPort's error into the registration's refusal.
func holdRefusal(err error) error {
	var held *PortHeldError
	if errors.As(err, &held) {
		return &fleetRefusal{RejectError: &control.RejectError{Code: control.CodePortInUse, Reason: held.Error()}, host: held.By.PublicHost}
	}
	return registryDown
}

// refusalHost is the public host a refused register_resp names, if any.
func refusalHost(err error) string {
	var f *fleetRefusal
	if errors.As(err, &f) {
		return f.host
	}
	return ""
}

// releasePort lets go of m's port in the fleet.
func (m *mapping) releasePort() {
	if m.claim != nil {
		m.claim.Release()
	}
}

// portLost closes the mapping bound on protocol/port: the registry, back
// after an outage, gave the port to another server of the fleet while
// this one's registration had lapsed. The registry is the fleet's one
// truth, so this server yields: its listener closes (its visitors are
// reset) and the client is told with an unasked 1004 naming the holder;
// it retries as for any 1004.
func (ss *serverSession) portLost(protocol string, port int, by FleetHolder) {
	udp := protocol == control.ProtocolUDP
	ss.mu.Lock()
	var lost *mapping
	for name, m := range ss.mappings {
		if m.port == port && m.udp == udp {
			lost = m
			delete(ss.mappings, name)
		}
	}
	ss.mu.Unlock()
	if lost == nil {
		return
	}
	_ = lost.ln.Close()
	held := &PortHeldError{Protocol: protocol, Port: port, By: by}
	ss.log.Warn("mapping closed: another server of the fleet took its port while the registry was unreachable",
		"mapping", lost.name, "remote_port", port, "server", by.Server, "code", int(control.CodePortInUse))
	ss.srv.obs.Refused(control.CodePortInUse)
	ss.refusedBefore(&control.Register{Name: lost.name, RemotePort: port, LocalAddr: lost.localAddr, Protocol: protocol},
		&control.RejectError{Code: control.CodePortInUse, Reason: held.Error()})
	ss.w.TrySend(&control.RegisterResp{Status: control.StatusFail, Code: control.CodePortInUse, Reason: held.Error(),
		Name: lost.name, RemotePort: port, PublicHost: by.PublicHost})
}
