package client

import (
	"context"
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

// wire is a client's mux session over a pipe, with its control stream, a
// control writer that has not started yet (start), and the frames
// the server side reads from that stream: what the client session tells
// the server, as the server gets it.
type wire struct {
	cli   *mux.Session
	srv   *mux.Session // the server's end, to open data streams
	w     *control.Writer
	table *control.StreamTable
	wg    sync.WaitGroup

	mu   sync.Mutex // guards msgs
	msgs []control.Message
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
	cctl, err := cli.OpenControl()
	if err != nil {
		t.Fatal(err)
	}
	tu := &wire{cli: cli, srv: srv}
	tu.w = control.NewWriter(cctl, cli.Done(), func(error) {})
	tu.table = control.NewStreamTable(tu.w)
	if err := control.WriteFrame(cctl, &control.Ping{Time: 1}); err != nil { // opens the stream on the wire
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sctl, err := srv.AcceptControl(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := control.ReadFrame(sctl); err != nil {
		t.Fatal(err)
	}
	tu.wg.Go(func() {
		for {
			m, err := control.ReadFrame(sctl)
			if err != nil {
				return
			}
			tu.mu.Lock()
			tu.msgs = append(tu.msgs, m)
			tu.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = cli.Close()
		_ = srv.Close()
		tu.wg.Wait()
	})
	return tu
}

// start runs the writer; until then what is sent waits in its queue.
func (tu *wire) start() { tu.wg.Go(tu.w.Run) }

// read returns the frames the server has read so far.
func (tu *wire) read() []control.Message {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	return append([]control.Message(nil), tu.msgs...)
}

// within polls cond for up to 5 s.
func within(cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pollUntil(ctx, time.Millisecond, cond)
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
		w := tu.w
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
		tu.start()
		want := map[bool]string{true: "online_port", false: "offline_port"}[final]
		if err := within(func() bool {
			_ = cs.checkRegs(time.Now())
			return w.Len() == 0 && lastReport(tu.read()) == want
		}); err != nil {
			t.Fatalf("run %d: the last report the server got is %q, want %s", run, lastReport(tu.read()), want)
		}
	}
}

func lastReport(msgs []control.Message) string {
	last := ""
	for _, m := range msgs {
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
	cs := &clientSession{c: c, link: &link{c: c, addr: "192.0.2.1:7000", host: "192.0.2.1"}, retiring: make(chan struct{}), log: c.log,
		mux: tu.cli, w: tu.w, streams: tu.table, regs: map[string]*regState{"late": {sent: true, sentOnline: true}}}
	tu.start()
	cs.drain() // nothing is up yet
	stop()
	cs.registered(&control.RegisterResp{Status: control.StatusOK, Name: "late", RemotePort: 4242})
	if err := within(func() bool { return len(tu.read()) == 1 }); err != nil {
		t.Fatalf("%d frames written, want the draining offline_port", len(tu.read()))
	}
	if o, ok := tu.read()[0].(*control.OfflinePort); !ok || !o.Draining || o.Port != 4242 {
		t.Errorf("wrote %#v, want offline_port 4242 draining", tu.read()[0])
	}
}
