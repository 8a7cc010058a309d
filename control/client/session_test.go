package client

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wire is a client's mux session over a pipe whose control writer
// records the frames it writes, for tests of what the client session
// tells the server.
type wire struct {
	cli   *mux.Session
	w     *control.Writer
	table *control.StreamTable
	rec   *frameRecorder
}

func newWire(t *testing.T) *wire {
	t.Helper()
	a, b := net.Pipe()
	cli, err := mux.Client(a, mux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mux.Server(b, mux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tu := &wire{cli: cli, rec: &frameRecorder{w: io.Discard}}
	tu.w = control.NewWriter(tu.rec, cli.Done(), func(error) {})
	tu.table = control.NewStreamTable(tu.w)
	var wg sync.WaitGroup
	wg.Go(tu.w.Run)
	t.Cleanup(func() {
		_ = cli.Close()
		_ = srv.Close()
		wg.Wait()
	})
	return tu
}

func TestSpreadAtMax(t *testing.T) {
	r := ReconnectOptions{Min: time.Second, Max: 16 * time.Second, Factor: 2}
	seen := map[time.Duration]bool{}
	for range 200 {
		w := spread(r.Max, r)
		if w < r.Max/2 || w > r.Max {
			t.Fatalf("spread(Max) = %s, want within [%s, %s]", w, r.Max/2, r.Max)
		}
		seen[w] = true
	}
	if len(seen) < 100 {
		t.Errorf("spread(Max) gave %d distinct waits in 200 draws: clients would return in lock-step", len(seen))
	}
	if w := spread(3*time.Second, r); w != 3*time.Second {
		t.Errorf("spread below Max = %s, want it unchanged", w)
	}
	r.NoJitter = true
	if w := spread(r.Max, r); w != r.Max {
		t.Errorf("spread without jitter = %s, want Max", w)
	}
}

// TestHealthReportsKeepOrder pins issue 9, defect 7: probe verdicts that
// flap while the control stream is backed up reach the server in order,
// ending with the last one. Before the fix a full queue started one
// goroutine per frame, and offline_port and online_port could swap,
// leaving a live mapping offline.
func TestHealthReportsKeepOrder(t *testing.T) {
	for run := range 20 {
		tu := newWire(t)
		g := &gate{w: tu.rec, open: make(chan struct{})}
		w := control.NewWriter(g, tu.cli.Done(), func(error) {})
		var wg sync.WaitGroup
		wg.Go(w.Run)
		m := &clientMapping{Mapping: Mapping{Name: "web"}}
		m.online.Store(true)
		cs := &clientSession{
			c:    &Client{opts: Options{HandshakeTimeout: time.Hour}, mappings: []*clientMapping{m}, stopping: context.Background()},
			mux:  tu.cli,
			w:    w,
			regs: map[string]*regState{"web": {up: true, port: 1234, sentOnline: true, answered: true}},
		}
		for w.Len() < control.MaxQueued-7 && w.TrySend(&control.Ping{Time: 1}) { // the writer is stuck; 7 places left
		}
		final := run%2 == 0
		for i := range 40 {
			on := i%2 == 1 // ends online
			if !final && i == 39 {
				on = false
			}
			m.online.Store(on)
			cs.healthChanged(m, on)
		}
		close(g.open)
		want := map[bool]string{true: "online_port", false: "offline_port"}[final]
		if err := waitFor(5*time.Second, func() bool {
			_ = cs.checkRegs(time.Now())
			return w.Len() == 0 && lastReport(tu.rec) == want
		}); err != nil {
			t.Fatalf("run %d: the last report the server got is %q, want %s", run, lastReport(tu.rec), want)
		}
		_ = tu.cli.Close()
		wg.Wait()
	}
}

func lastReport(r *frameRecorder) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := ""
	for _, m := range r.msgs {
		if t := m.Type(); t == "online_port" || t == "offline_port" {
			last = t
		}
	}
	return last
}

// TestRegisteredWhileStoppingIsDrained: a mapping whose register is
// answered after Shutdown began is told offline (draining) at once, like
// those that were up already, so the server takes no visitor for it.
func TestRegisteredWhileStoppingIsDrained(t *testing.T) {
	tu := newWire(t)
	m := &clientMapping{Mapping: Mapping{Name: "late"}}
	m.online.Store(true)
	stopping, stop := context.WithCancel(context.Background())
	c := &Client{log: slog.New(slog.DiscardHandler), mappings: []*clientMapping{m},
		byName: map[string]*clientMapping{"late": m}, stopping: stopping, stop: stop}
	cs := &clientSession{c: c, log: c.log, mux: tu.cli, w: tu.w, streams: tu.table,
		regs: map[string]*regState{"late": {sent: true, sentOnline: true}}}
	cs.drain() // nothing is up yet
	stop()
	cs.registered(&control.RegisterResp{Status: control.StatusOK, Name: "late", RemotePort: 4242})
	if err := waitFor(5*time.Second, func() bool { return tu.rec.count() == 1 }); err != nil {
		t.Fatalf("%d frames written, want the draining offline_port", tu.rec.count())
	}
	tu.rec.mu.Lock()
	defer tu.rec.mu.Unlock()
	if o, ok := tu.rec.msgs[0].(*control.OfflinePort); !ok || !o.Draining || o.Port != 4242 {
		t.Errorf("wrote %#v, want offline_port 4242 draining", tu.rec.msgs[0])
	}
}

// gate passes writes through once opened; until then they block.
type gate struct {
	w    io.Writer
	open chan struct{}
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	return g.w.Write(p)
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return context.DeadlineExceeded
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

type frameRecorder struct {
	w    io.Writer
	mu   sync.Mutex
	msgs []control.Message
}

func (r *frameRecorder) Write(p []byte) (int, error) {
	if m, err := control.Decode(p[4:]); err == nil {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	}
	return r.w.Write(p)
}

func (r *frameRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}
