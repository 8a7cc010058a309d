package client

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
)

// Changes says what SetMappings changed, by mapping name.
type Changes struct {
	Added, Removed, Changed []string
}

// Empty reports whether nothing changed.
func (ch Changes) Empty() bool { return len(ch.Added)+len(ch.Removed)+len(ch.Changed) == 0 }

// checkMappings checks names (valid and each once), PROXY protocol
// versions and bandwidth limits.
func checkMappings(maps []Mapping) error {
	seen := make(map[string]bool, len(maps))
	for _, m := range maps {
		if !control.ValidName(m.Name) || seen[m.Name] {
			return fmt.Errorf("client: mapping name %q is invalid or repeated", m.Name)
		}
		seen[m.Name] = true
		if err := m.ProxyProtocol.check(); err != nil {
			return fmt.Errorf("client: mapping %s: %w", m.Name, err)
		}
		if m.BandwidthLimit < 0 || (m.BandwidthLimit > 0 && m.BandwidthLimit < control.MinBandwidth) {
			return fmt.Errorf("client: mapping %s: bandwidth limit %d, want 0 or at least %d bytes a second", m.Name, m.BandwidthLimit, control.MinBandwidth)
		}
		if err := m.checkUDP(); err != nil {
			return fmt.Errorf("client: mapping %s: %w", m.Name, err)
		}
	}
	return nil
}

// SetMappings replaces the client's mappings with maps, in the live
// session, without ending it: a new name is registered, a name gone is
// unregistered, and a mapping whose local_addr, remote_port,
// health_check, proxy_protocol, allow_ips or deny_ips changed is both. A mapping that did not change, and its
// visitors, are not touched. The visitors of a removed or changed mapping
// go on for up to shutdown_timeout (on each side), then are reset; new
// visitors reach the new mapping at once. On error nothing changes.
//
// A server older than the unregister message (it does not name
// FeatureUnregister) keeps a removed mapping's port until the session
// ends; the client refuses its visitors meanwhile.
func (c *Client) SetMappings(maps []Mapping) (Changes, error) {
	if err := checkMappings(maps); err != nil {
		return Changes{}, err
	}
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	c.mapMu.Lock()
	defer c.mapMu.Unlock()
	var ch Changes
	var gone, fresh []*clientMapping
	list := make([]*clientMapping, 0, len(maps))
	byName := make(map[string]*clientMapping, len(maps))
	for _, m := range maps {
		old := c.byName[m.Name]
		switch {
		case old != nil && sameMapping(old.Mapping, m):
			list = append(list, old)
			byName[m.Name] = old
			continue
		case old != nil:
			ch.Changed = append(ch.Changed, m.Name)
			gone = append(gone, old)
		default:
			ch.Added = append(ch.Added, m.Name)
		}
		var cnt *counters
		if old != nil {
			cnt = old.counters // the mapping's figures go on
		}
		cm := newMapping(m, cnt)
		list = append(list, cm)
		byName[m.Name] = cm
		fresh = append(fresh, cm)
	}
	for _, old := range c.mappings {
		if byName[old.Name] == nil {
			ch.Removed = append(ch.Removed, old.Name)
			gone = append(gone, old)
		}
	}
	if ch.Empty() {
		return ch, nil
	}
	c.mappings, c.byName = list, byName
	c.mu.Lock()
	for _, m := range fresh {
		c.startProbeLocked(m)
	}
	sessions := c.sessions()
	c.mu.Unlock()
	grace := max(c.opts.ShutdownTimeout, 0)
	for _, m := range gone {
		if m.stopProbe != nil {
			m.stopProbe()
		}
		time.AfterFunc(grace, m.cutNow) // its visitors' relays abort then
	}
	for _, cs := range sessions {
		cs.applyMappings(gone, fresh)
	}
	slices.Sort(ch.Removed)
	c.log.Info("mappings changed", "added", ch.Added, "removed", ch.Removed, "changed", ch.Changed)
	return ch, nil
}

// startProbeLocked starts m's probe loop if it has one and Run runs. c.mu
// is held.
func (c *Client) startProbeLocked(m *clientMapping) {
	if !m.HealthCheck || c.runCtx == nil || c.runCtx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(c.runCtx)
	m.stopProbe = cancel
	c.probes.Go(func() { c.probeLoop(ctx, m) })
}

// mapping is the current mapping of that name, or nil.
func (c *Client) mapping(name string) *clientMapping {
	c.mapMu.RLock()
	defer c.mapMu.RUnlock()
	return c.byName[name]
}

// applyMappings tells the server of a change made by SetMappings, which
// holds c.mapMu: each gone mapping is unregistered (before a changed one's
// new register, on the same ordered control stream), each fresh one
// registered. Before the session's first registers (registerAll), there
// is nothing to do: they take the new list.
func (cs *clientSession) applyMappings(gone, fresh []*clientMapping) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.registering {
		return
	}
	for _, m := range gone {
		r := cs.regs[m.Name]
		delete(cs.regs, m.Name)
		if r == nil || (!r.sent && !r.up) {
			continue
		}
		if !cs.unregisters {
			cs.log.Warn("the server cannot remove a mapping from a live session (it is older than this client); its port stays bound until the session ends",
				"mapping", m.Name, "remote_port", r.port)
			continue
		}
		if !cs.w.TrySend(&control.Unregister{Name: m.Name}) {
			cs.unregs = append(cs.unregs, m.Name) // checkRegs sends it, before the name's new register
		}
	}
	now := time.Now()
	for _, m := range fresh {
		cs.regs[m.Name] = &regState{}
		if slices.Contains(cs.unregs, m.Name) {
			cs.regs[m.Name].retryAt = now // after the unregister
			continue
		}
		cs.sendRegisterLocked(m, now)
	}
}

// flushUnregsLocked sends the unregisters the queue had no room for; it
// reports whether none is left. cs.mu is held.
func (cs *clientSession) flushUnregsLocked() bool {
	for len(cs.unregs) > 0 {
		if !cs.w.TrySend(&control.Unregister{Name: cs.unregs[0]}) {
			return false
		}
		cs.unregs = cs.unregs[1:]
	}
	return true
}
