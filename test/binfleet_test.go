package test

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
)

// fleetServerBinary starts a server binary of the fleet in te, named
// name, on bind (port 0: any), its ports and public host on public, with
// an admin API; it returns the process, its address and its admin URL.
func fleetServerBinary(t *testing.T, te *testEtcd, name, bind, public string, ttl time.Duration) (*proc, string, string) {
	t.Helper()
	p := startProc(t, nil, "server", "--config", writeFile(t, "server.toml", fmt.Sprintf(`
bind_addr = %q
token = %q
public_addr = %q
heartbeat_timeout = "2s"
heartbeat_check_interval = "200ms"
[admin]
addr = "127.0.0.1:0"
[cluster]
etcd_endpoints = [%q]
name = %q
public_host = %q
lease_ttl = %q
registry_timeout = "1s"
[log]
level = "debug"
format = "json"
`, bind, testToken, public, te.endpoint(), name, public, ttl.String())))
	url := p.waitLog(t, "admin api listening", msgIs("admin api listening"))["addr"].(string)
	addr := p.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
	p.waitLog(t, "registered in etcd", msgIs("fleet: registered in etcd"))
	return p, addr, url
}

// TestBinaryFleetStopAndKill: a real server binary in a fleet with an
// in-process one. Its SIGTERM frees its ports for the other server at
// once, long before its 30 s lease would end (Close revokes it); its
// `gotunnel-mux status` lists the whole fleet; and its kill -9 frees them
// within its 2 s lease.
func TestBinaryFleetStopAndKill(t *testing.T) {
	leakCheckEtcd(t)
	te := startEtcd(t)
	b := startFleetServer(t, te, "b", "127.0.0.2", "127.0.0.2", fastServer())
	be := startBackend(t, echo)
	p := freeOnAll(t, "127.0.0.1", "127.0.0.2")
	web := client.Mapping{Name: "web", LocalAddr: be.addr, RemotePort: p}

	// A clean stop: the lease is revoked, the port free at once.
	a1, aAddr, adminURL := fleetServerBinary(t, te, "a", "127.0.0.1:0", "127.0.0.1", 30*time.Second)
	x := startClientOpts(t, fastClient(aAddr, "x", web))
	x.waitUp(t, "web")
	y := startClientOpts(t, fastClient(b.addr, "y", web))
	refusedWith(t, y, "web", control.CodePortInUse, "held by server a (127.0.0.1)")
	out, err := exec.Command(buildBinary(t), "status", "--admin", adminURL).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fleet: 2 server(s)") ||
		!strings.Contains(string(out), fmt.Sprintf("tcp/%d  a       x       web", p)) {
		t.Errorf("gotunnel-mux status against a: %v\n%s\nwant the fleet's two servers and a holding tcp/%d for x", err, out, p)
	}
	_ = a1.cmd.Process.Signal(syscall.SIGTERM)
	stopped := time.Now()
	if code := a1.exitCode(t, 15*time.Second); code != 0 {
		t.Fatalf("a exited %d after SIGTERM, want 0", code)
	}
	y.waitEvent(t, client.EventMappingUp, "web")
	if took := time.Since(stopped); took > 10*time.Second {
		t.Errorf("b had the port %s after a's SIGTERM; want at once, not at the end of a's 30 s lease", took)
	} else {
		t.Logf("b had the port %s after a's SIGTERM", took.Round(time.Millisecond))
	}

	// a again, on the same address: x is back, and gets the port once y
	// has let it go; y2 then waits for it on b.
	a2, _, _ := fleetServerBinary(t, te, "a", aAddr, "127.0.0.1", fleetTTL)
	refusedWith(t, x, "web", control.CodePortInUse, "held by server b (127.0.0.2)")
	_ = y.stop(t)
	if got := x.waitEvent(t, client.EventMappingUp, "web").RemotePort; got != p {
		t.Fatalf("x got %d on a, want %d", got, p)
	}
	y2 := startClientOpts(t, fastClient(b.addr, "y2", web))
	refusedWith(t, y2, "web", control.CodePortInUse, "held by server a")

	// kill -9: the port is free when a's lease ends.
	_ = a2.cmd.Process.Kill()
	<-a2.done
	killed := time.Now()
	y2.waitEvent(t, client.EventMappingUp, "web")
	took := time.Since(killed)
	t.Logf("b had the port %s after a's kill -9 (lease %s)", took.Round(time.Millisecond), fleetTTL)
	if limit := fleetTTL + 2*time.Second; took > limit {
		t.Errorf("b had the port %s after a's kill -9, want within its lease and a little (%s)", took, limit)
	}
	if err := echoRoundTrip(p, 7, 64<<10); err == nil {
		t.Error("127.0.0.1:" + strconv.Itoa(p) + " still echoes: a's port outlived it")
	}
}
