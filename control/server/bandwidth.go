package server

import (
	"sync"

	"golang.org/x/time/rate"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
)

// bandwidths are the max_bandwidth_per_client limiters, one pair per
// client name, shared by all the client's mappings and by the sessions of
// that name that overlap (a takeover). An entry lives while a session of
// its name does.
type bandwidths struct {
	mu     sync.Mutex
	byName map[string]*clientBandwidth
}

// clientBandwidth is one client's pair of limiters: in for the bytes read
// from its visitors, out for the bytes written to them.
type clientBandwidth struct {
	refs int // sessions holding it; guarded by bandwidths.mu

	mu      sync.Mutex // guards the fields below
	limit   int64      // the rate in and out were made for; 0: none
	in, out *rate.Limiter
}

// acquire returns name's entry, counting one more session on it.
func (b *bandwidths) acquire(name string) *clientBandwidth {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byName == nil {
		b.byName = make(map[string]*clientBandwidth)
	}
	cb := b.byName[name]
	if cb == nil {
		cb = &clientBandwidth{}
		b.byName[name] = cb
	}
	cb.refs++
	return cb
}

// release counts one session less on name's entry, and drops it after
// the last.
func (b *bandwidths) release(name string, cb *clientBandwidth) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cb.refs--; cb.refs == 0 && b.byName[name] == cb {
		delete(b.byName, name)
	}
}

// limiters are the client's limiters for a relay starting now, at limit
// bytes a second (the policy in force): when the limit changed, new
// relays get new limiters and the running ones keep theirs. Both are nil
// for no limit.
func (cb *clientBandwidth) limiters(limit int64) (in, out *rate.Limiter) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if limit != cb.limit {
		cb.limit, cb.in, cb.out = limit, dataplane.NewLimiter(limit), dataplane.NewLimiter(limit)
	}
	return cb.in, cb.out
}
