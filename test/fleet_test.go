package test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"github.com/gotunnel-mux/gotunnel-mux/control/server/fleet"
)

// A fleet: servers that share one registry, a real etcd embedded in the
// test process (etcd_test.go). Each server serves its mapping ports on an
// address of its own (127.0.0.1, .2, .3), as machines of a fleet would,
// so that two of them could bind the same port number: only the registry
// stops them.

// fleetTTL is the servers' lease in these tests: etcd's shortest.
const fleetTTL = 2 * time.Second

type fleetServer struct {
	*testServer
	fleet *fleet.Fleet
	name  string
}

// startFleetServer runs a server of the fleet in te, its ports on public,
// named name, that tells clients publicHost. Its fleet closes after the
// server, before the etcd stops.
func startFleetServer(t *testing.T, te *testEtcd, name, public, publicHost string, opts server.Options) *fleetServer {
	t.Helper()
	f, err := fleet.New(fleet.Options{Endpoints: []string{te.endpoint()}, Name: name, PublicHost: publicHost,
		LeaseTTL: fleetTTL, RegistryTimeout: 500 * time.Millisecond, Logger: testLogger(t).With("side", "fleet")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if err := pollFor(10*time.Second, f.Reachable); err != nil {
		t.Fatalf("server %s: the fleet is not reachable: %v", name, err)
	}
	opts.PublicAddr, opts.Fleet = public, f
	return &fleetServer{testServer: startServerOn(t, listen(t), opts), fleet: f, name: name}
}

// freeOnAll is a port free on each of hosts a moment ago.
func freeOnAll(t *testing.T, hosts ...string) int {
	t.Helper()
	for range 32 {
		ln := listen(t)
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		free := true
		for _, h := range hosts {
			other, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			_ = other.Close()
		}
		if free {
			return port
		}
	}
	t.Fatalf("no port free on %v", hosts)
	return 0
}

// refusedWith waits for the mapping's next refusal and checks its code
// and words.
func refusedWith(t *testing.T, c *testClient, mapping string, code control.Code, words string) *control.RejectError {
	t.Helper()
	e := c.waitEvent(t, client.EventMappingFailed, mapping)
	var re *control.RejectError
	if !errors.As(e.Err, &re) || re.Code != code || !strings.Contains(re.Reason, words) {
		t.Fatalf("mapping %s refused with %v, want %d naming %q", mapping, e.Err, int(code), words)
	}
	return re
}

// TestFleetPortsAndNames: three servers in one etcd. The same fixed port
// asked by two clients on two servers is granted once: the other is
// refused with 1004 in words naming the server that holds it (and gets
// the port as soon as that holder lets it go); remote_port 0 picks a
// port that no server of the fleet holds; a client's mapping line names
// its server's public_host; a client name that logs into server B is
// taken from server A at once, its port with it; and every server's
// status lists the whole fleet.
func TestFleetPortsAndNames(t *testing.T) {
	leakCheckEtcd(t)
	te := startEtcd(t)
	hosts := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	p, q, m := freeOnAll(t, hosts...), freeOnAll(t, hosts...), freeOnAll(t, hosts...)
	a := startFleetServer(t, te, "a", hosts[0], "a.fleet.test", fastServer())
	b := startFleetServer(t, te, "b", hosts[1], "b.fleet.test", fastServer())
	co := fastServer()
	co.AllowPorts = []server.PortRange{{Lo: p, Hi: p}, {Lo: q, Hi: q}}
	c := startFleetServer(t, te, "c", hosts[2], "c.fleet.test", co)
	be := startBackend(t, echo)

	// One fixed port, two clients on two servers: granted once.
	x := startClientOpts(t, fastClient(a.addr, "x", client.Mapping{Name: "web", LocalAddr: be.addr, RemotePort: p}))
	if got := x.waitUp(t, "web")["web"]; got != p {
		t.Fatalf("x got port %d, want %d", got, p)
	}
	y := startClientOpts(t, fastClient(b.addr, "y", client.Mapping{Name: "web", LocalAddr: be.addr, RemotePort: p}))
	refusedWith(t, y, "web", control.CodePortInUse, "held by server a (a.fleet.test)")
	if err := echoRoundTrip(p, 1, 64<<10); err != nil {
		t.Fatal(err)
	}
	assertRefusedOn(t, hosts[1], p)

	// The holder's session ends: the port is free in the fleet, and y,
	// retrying its 1004, gets it on b.
	_ = x.stop(t)
	start := time.Now()
	if got := y.waitEvent(t, client.EventMappingUp, "web").RemotePort; got != p {
		t.Fatalf("y got port %d, want %d", got, p)
	}
	t.Logf("y had the port on b %s after x left a", time.Since(start).Round(time.Millisecond))

	// remote_port 0 on c, whose allow_ports are p (held by b) and q:
	// only q is free in the fleet. The client names c's public host.
	zlog, zlogs := recordingLogger(t)
	zo := fastClient(c.addr, "z", client.Mapping{Name: "any", LocalAddr: be.addr})
	zo.Logger = zlog
	z := startClientOpts(t, zo)
	if got := z.waitUp(t, "any")["any"]; got != q {
		t.Fatalf("z got port %d, want %d (%d is held by b)", got, q, p)
	}
	zlogs.waitLog(t, 5*time.Second, "any  tcp://c.fleet.test:"+strconv.Itoa(q)+" -> "+be.addr)

	// A name logging into b is taken from a at once, with its port: the
	// old session is a silent one (a client that moved, or hung).
	old := dialRaw(t, a.addr)
	old.login(t, "mover", control.Register{Name: "ssh", RemotePort: m, LocalAddr: be.addr, Online: true})
	start = time.Now()
	mover := startClientOpts(t, fastClient(b.addr, "mover", client.Mapping{Name: "ssh", LocalAddr: be.addr, RemotePort: m}))
	if got := mover.waitUp(t, "ssh")["ssh"]; got != m {
		t.Fatalf("mover got port %d on b, want %d", got, m)
	}
	select {
	case <-old.sess.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("a did not close the session whose name b took, within 2s")
	}
	t.Logf("the name and its port moved from a to b in %s", time.Since(start).Round(time.Millisecond))
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(hosts[1], strconv.Itoa(m)), 2*time.Second); err != nil {
		t.Errorf("the moved port on b: %v", err)
	} else {
		_ = c.Close()
	}

	// Any server's status lists the whole fleet.
	want := map[string]string{"tcp/" + strconv.Itoa(p): "b", "tcp/" + strconv.Itoa(q): "c", "tcp/" + strconv.Itoa(m): "b"}
	for _, s := range []*fleetServer{a, b, c} {
		var st *server.FleetStatus
		if err := pollFor(5*time.Second, func() bool {
			var err error
			st, err = s.FleetStatus(context.Background())
			return err == nil && len(st.Servers) == 3 && len(st.Ports) == 3 && len(st.Clients) == 3
		}); err != nil {
			t.Fatalf("fleet status from %s = %+v, want 3 servers, 3 ports and 3 clients (x left)", s.name, st)
		}
		for _, fp := range st.Ports {
			if k := fp.Protocol + "/" + strconv.Itoa(fp.Port); want[k] != fp.Server {
				t.Errorf("fleet status from %s: %s held by %s, want %s", s.name, k, fp.Server, want[k])
			}
		}
	}
}

// assertRefusedOn checks that nothing listens on host:port.
func assertRefusedOn(t *testing.T, host string, port int) {
	t.Helper()
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), 2*time.Second); err == nil {
		_ = c.Close()
		t.Errorf("%s:%d accepts connections, want refused", host, port)
	}
}

// TestFleetEtcdOutage: etcd stops for a while. A download running
// through the outage arrives intact and no live session ends; a new
// login is refused in words with 1014, and so is a registration in a
// live session; when etcd is back (same data directory and ports) all
// is normal: the refused client is in by itself, the registration goes
// through. The outage lasts 3 s where the issue says 30 s: what it shows
// (the servers see etcd gone, answer what waits on it with 1014 within
// registry_timeout, touch nothing live, and take etcd back) happens
// within the first keepalives and timeouts, which the test shortens (a
// 2 s lease, renewed every 0.67 s; a 500 ms registry_timeout), and the
// outage outlasts the lease, so that a server that dropped its keys on
// its lease's clock would be seen doing so. (It lasts about 7 s all the
// same: embedded etcd's Close waits that long for open watch streams.)
func TestFleetEtcdOutage(t *testing.T) {
	leakCheckEtcd(t)
	const size, rate = 24 << 20, 2 << 20 // a 12 s download
	te := startEtcd(t)
	so := fastServer()
	so.HeartbeatTimeout = time.Minute // the raw session sends no pings
	a := startFleetServer(t, te, "a", "127.0.0.1", "a.fleet.test", so)
	b := startFleetServer(t, te, "b", "127.0.0.2", "b.fleet.test", so)
	src, want := sourceOf(t, 51, size)
	dl := startClientOpts(t, fastClient(a.addr, "dl", client.Mapping{Name: "big", LocalAddr: src.addr}))
	port := dl.waitUp(t, "big")["big"]
	early := dialRaw(t, a.addr)
	early.login(t, "early")

	d := startDownload(dialPort(t, port), rate)
	if err := pollFor(10*time.Second, func() bool { return d.pr.count.Load() >= 1<<20 }); err != nil {
		t.Fatal("the download did not get going")
	}
	// etcd's Close refuses new requests at once, then waits up to its
	// request timeout (7 s) for the servers' watch streams: the outage
	// starts with it.
	outage := time.Now()
	stopped := make(chan struct{})
	go func() { te.stop(); close(stopped) }()
	if err := pollFor(5*time.Second, func() bool { return !a.fleet.Reachable() && !b.fleet.Reachable() }); err != nil {
		t.Fatal("the servers did not notice that etcd stopped")
	}

	// A new login: refused in words, 1014; the client retries.
	nlog, nlogs := recordingLogger(t)
	no := fastClient(b.addr, "newcomer", client.Mapping{Name: "e", LocalAddr: src.addr})
	no.HandshakeTimeout, no.Logger = 3*time.Second, nlog
	newcomer := startClientOpts(t, no)
	nlogs.waitLog(t, 5*time.Second, "disconnected", "code", "1014", "err", "refused: 1014 the fleet's registry (etcd) is unreachable")
	// A registration in a live session: refused in words, 1014.
	early.send(t, &control.Register{Name: "late", Protocol: control.ProtocolTCP, LocalAddr: src.addr, Online: true})
	if r, ok := early.recv(t).(*control.RegisterResp); !ok || r.Code != control.CodeRegistryDown || r.Reason != "the fleet's registry (etcd) is unreachable" {
		t.Fatalf("register during the outage = %+v, want fail 1014 in words", r)
	}

	t.Logf("refusals seen %s into the outage", time.Since(outage).Round(time.Millisecond))
	<-stopped
	<-time.After(time.Until(outage.Add(3 * time.Second))) // at least longer than the lease
	if d.pr.count.Load() >= size {
		t.Fatal("the download ended before etcd came back; make it longer")
	}
	te.restart()
	t.Logf("etcd back after %s", time.Since(outage).Round(time.Millisecond))
	if err := pollFor(10*time.Second, func() bool { return a.fleet.Reachable() && b.fleet.Reachable() }); err != nil {
		t.Fatal("the servers did not take etcd back")
	}
	newcomer.waitUp(t, "e")
	early.send(t, &control.Register{Name: "late", Protocol: control.ProtocolTCP, LocalAddr: src.addr, Online: true})
	if r, ok := early.recv(t).(*control.RegisterResp); !ok || r.Status != control.StatusOK || r.PublicHost != "a.fleet.test" {
		t.Fatalf("register after the outage = %+v, want ok from a.fleet.test", r)
	}
	d.wait(t, 20*time.Second, size, want)
	if n := countEvents(dl.events, client.EventSessionDown); n != 0 {
		t.Errorf("the downloading client's session ended %d times during the outage, want never", n)
	}
}
