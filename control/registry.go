package control

import (
	"errors"
	"math/rand/v2"
	"sync"
)

// registry maps client names to their live session. A name has at most one
// session: a new login with the name takes over.
type registry struct {
	mu     sync.Mutex // guards byName and closed
	byName map[string]*serverSession
	closed bool
}

func newRegistry() *registry {
	return &registry{byName: make(map[string]*serverSession)}
}

// claim makes ss the session of its name and returns the session it
// replaced, if any. It fails once the registry is closed.
func (r *registry) claim(ss *serverSession) (old *serverSession, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrServerClosed
	}
	old = r.byName[ss.name]
	r.byName[ss.name] = ss
	return old, nil
}

// release forgets ss if it is still the session of its name.
func (r *registry) release(ss *serverSession) {
	r.mu.Lock()
	if r.byName[ss.name] == ss {
		delete(r.byName, ss.name)
	}
	r.mu.Unlock()
}

// close refuses further claims and returns the live sessions.
func (r *registry) close() []*serverSession {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return r.sessions()
}

func (r *registry) sessions() []*serverSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*serverSession, 0, len(r.byName))
	for _, ss := range r.byName {
		out = append(out, ss)
	}
	return out
}

// errNoFreePort is returned when no port of allow_ports could be bound.
var errNoFreePort = errors.New("no free port in allow_ports")

// pickAttempts bounds the random tries for remote_port = 0.
const pickAttempts = 64

// randomPort returns a port drawn uniformly from the union of ranges.
func randomPort(ranges []PortRange) int {
	total := 0
	for _, r := range ranges {
		total += r.Hi - r.Lo + 1
	}
	n := rand.IntN(total)
	for _, r := range ranges {
		size := r.Hi - r.Lo + 1
		if n < size {
			return r.Lo + n
		}
		n -= size
	}
	return ranges[len(ranges)-1].Hi
}

func allowed(ranges []PortRange, p int) bool {
	for _, r := range ranges {
		if r.Contains(p) {
			return true
		}
	}
	return false
}
