package test

import (
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

// testEtcd is a real etcd server inside the test process
// (go.etcd.io/etcd/server/v3/embed) on 127.0.0.1, so that the fleet's
// tests run against the registry itself, never a mock. It can be stopped
// and started again on the same data directory and ports, as an etcd
// that went away and came back.
type testEtcd struct {
	t            *testing.T
	dir          string
	client, peer url.URL // after the first start: the ports it bound
	e            *embed.Etcd
}

// startEtcd starts a one-member etcd on ports the kernel picks; it is
// stopped before the test's leak check runs (register leakCheck first).
func startEtcd(t *testing.T) *testEtcd {
	t.Helper()
	zero, _ := url.Parse("http://127.0.0.1:0")
	te := &testEtcd{t: t, dir: t.TempDir(), client: *zero, peer: *zero}
	te.start()
	te.client, te.peer = url.URL{Scheme: "http", Host: te.e.Clients[0].Addr().String()}, url.URL{Scheme: "http", Host: te.e.Peers[0].Listener.Addr().String()}
	t.Cleanup(te.stop)
	return te
}

// endpoint is the client URL of the etcd.
func (te *testEtcd) endpoint() string { return te.client.String() }

func (te *testEtcd) start() {
	te.t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "fleet-test"
	cfg.Dir = te.dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{te.client}, []url.URL{te.client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{te.peer}, []url.URL{te.peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		te.t.Fatalf("embedded etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		te.t.Fatal("embedded etcd not ready within 20s")
	}
	te.e = e
}

// stop stops the etcd (idempotent) and waits for it.
func (te *testEtcd) stop() {
	if te.e != nil {
		te.e.Close()
		<-te.e.Server.StopNotify()
		te.e = nil
	}
}

// restart starts it again on the same data directory and ports.
func (te *testEtcd) restart() { te.start() }

// etcdIgnore are the goroutines that embedded etcd leaves for good after
// Close, named, for goleak.
var etcdIgnore = []goleak.Option{}

// leakCheckEtcd is leakCheck for the tests with an embedded etcd.
func leakCheckEtcd(t testing.TB) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t, append([]goleak.Option{goleak.IgnoreCurrent()}, etcdIgnore...)...) })
}

func TestEmbeddedEtcdRestarts(t *testing.T) {
	leakCheckEtcd(t)
	te := startEtcd(t)
	te.stop()
	te.restart()
}
