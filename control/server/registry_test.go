package server

import (
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/gotunnel-mux/gotunnel-mux/control"

	"go.uber.org/goleak"
)

// testSession is a session with no connection: enough for the registry
// and for bind's checks before it listens.
func testSession(name string) *serverSession {
	srv, o := &Server{}, Options{}.WithDefaults()
	srv.pol.Store(newPolicy(&o))
	return &serverSession{srv: srv, name: name, mappings: make(map[string]*mapping)}
}

// TestRegistryDrainUnbindsAndRefuses: once Shutdown drains the registry,
// no name is claimed (no login, no takeover), and a session claimed
// before cannot bind a port.
func TestRegistryDrainUnbindsAndRefuses(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := newRegistry()
	before := testSession("a")
	if _, err := r.claim(before); err != nil || !r.accepting() {
		t.Fatalf("claim before drain = %v, accepting %v; want nil, true", err, r.accepting())
	}
	r.drain()
	if r.accepting() {
		t.Error("accepting() after drain = true")
	}
	if _, err := before.bind(&control.Register{Name: "m", LocalAddr: "127.0.0.1:1"}); control.CodeOf(err) != control.CodePortInUse {
		t.Errorf("bind by a session claimed before the drain = %v, want 1004 (session is closing)", err)
	}
	for _, name := range []string{"b", "a"} {
		if old, err := r.claim(testSession(name)); !errors.Is(err, errShuttingDown) || old != nil {
			t.Errorf("claim(%q) after drain = %v, %v; want errShuttingDown", name, old, err)
		}
	}
	if got := r.sessions(); len(got) != 1 || got[0] != before {
		t.Errorf("sessions after refused claims = %v, want only the one claimed before", got)
	}
	r.close()
	if _, err := r.claim(testSession("c")); !errors.Is(err, ErrClosed) {
		t.Errorf("claim after close = %v, want ErrClosed", err)
	}
}

// TestRegistryNoClaimEscapesDrain: claims racing drain are either refused
// or unbound by it; none is left free to bind.
func TestRegistryNoClaimEscapesDrain(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for range 20 {
		r := newRegistry()
		ss := make([]*serverSession, 64)
		var wg sync.WaitGroup
		for i := range ss {
			ss[i] = testSession(strconv.Itoa(i))
			wg.Go(func() { _, _ = r.claim(ss[i]) })
			if i == len(ss)/2 {
				wg.Go(r.drain)
			}
		}
		wg.Wait()
		for _, s := range r.sessions() {
			s.mu.Lock()
			unbound := s.unbound
			s.mu.Unlock()
			if !unbound {
				t.Fatalf("session %q was claimed around the drain and not unbound: it may bind ports", s.name)
			}
		}
	}
}
