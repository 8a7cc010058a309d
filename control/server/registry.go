package server

import (
	"errors"
	"math/rand/v2"
	"sync"
)

// registry maps client names to their live session. A name has at most one
// session: a new login with the name takes over. Once the server drains
// (Shutdown) or closes, no name is claimed any more.
type registry struct {
	mu       sync.Mutex // guards the fields below
	byName   map[string]*serverSession
	draining bool // Shutdown began: no claims; every session was unbound
	closed   bool
}

// errShuttingDown refuses a claim once Shutdown has begun.
var errShuttingDown = errors.New("server: shutting down")

func newRegistry() *registry {
	return &registry{byName: make(map[string]*serverSession)}
}

// claim makes ss the session of its name and returns the session it
// replaced, if any. It fails once the registry drains or is closed, under
// the same lock as drain: a session is either claimed before drain, and
// unbound by it, or not at all.
func (r *registry) claim(ss *serverSession) (old *serverSession, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.refusing(); err != nil {
		return nil, err
	}
	old = r.byName[ss.name]
	r.byName[ss.name] = ss
	return old, nil
}

// accepting reports whether a login may still succeed.
func (r *registry) accepting() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refusing() == nil
}

// refusing is why no claim may succeed, or nil; r.mu is held.
func (r *registry) refusing() error {
	switch {
	case r.closed:
		return ErrClosed
	case r.draining:
		return errShuttingDown
	}
	return nil
}

// release forgets ss if it is still the session of its name.
func (r *registry) release(ss *serverSession) {
	r.mu.Lock()
	if r.byName[ss.name] == ss {
		delete(r.byName, ss.name)
	}
	r.mu.Unlock()
}

// drain refuses further claims and unbinds every session's ports (no
// session binds one again), all under the lock that claim takes.
func (r *registry) drain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.draining = true
	for _, ss := range r.byName {
		ss.unbind()
	}
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
