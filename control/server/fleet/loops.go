package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The three loops of a Fleet, each started by New and joined by Close:
// leaseLoop keeps the lease (and writes everything again after an
// outage), watchLoop hears of names taken by other servers, releaseLoop
// takes released claims out of etcd.

// leaseLoop grants a lease, writes this server's record and every claim
// under it, and keeps it alive until etcd no longer has it; then again.
func (f *Fleet) leaseLoop() {
	first := true
	for f.ctx.Err() == nil {
		lease, err := f.grant(first)
		if err != nil {
			f.setUp(false, err)
			f.pause(f.opts.LeaseTTL / 3)
			continue
		}
		first = false
		f.setUp(true, nil)
		f.reassert(lease)
		f.keep(lease)
	}
}

// pause waits d or until Close.
func (f *Fleet) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.ctx.Done():
	case <-t.C:
	}
}

// grant takes a new lease and writes this server's record under it. At
// the first grant, a record of the same name under another lease is a
// previous run of this server (killed before its lease ended): that
// lease is revoked, so that its names and ports are free at once.
func (f *Fleet) grant(first bool) (clientv3.LeaseID, error) {
	ctx, cancel := context.WithTimeout(f.ctx, f.opts.RegistryTimeout)
	defer cancel()
	key := f.key("servers", f.opts.Name)
	if first {
		if resp, err := f.cli.Get(ctx, key); err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 {
			old := clientv3.LeaseID(resp.Kvs[0].Lease)
			f.log.Warn("fleet: a server of this name was registered; taking its place (a restart?): its names and ports are freed",
				"server", f.opts.Name, "old_lease", int64(old))
			if _, err := f.cli.Revoke(ctx, old); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return 0, err
			}
		}
	}
	resp, err := f.cli.Grant(ctx, int64(f.opts.LeaseTTL/time.Second))
	if err != nil {
		return 0, err
	}
	value, _ := json.Marshal(serverRecord{Name: f.opts.Name, PublicHost: f.opts.PublicHost, BindAddr: f.opts.BindAddr,
		Version: f.opts.Version, Since: f.since.UTC()})
	put, err := f.cli.Put(ctx, key, string(value), clientv3.WithLease(resp.ID))
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.lease = resp.ID
	if f.watchRev == 0 {
		f.watchRev = put.Header.Revision
	}
	close(f.leased)
	f.mu.Unlock()
	f.log.Info("fleet: registered in etcd", "server", f.opts.Name, "public_host", f.opts.PublicHost,
		"lease_ttl", f.opts.LeaseTTL.String())
	return resp.ID, nil
}

// keep renews lease every third of its TTL until etcd says it is gone
// (it ended while etcd did not hear from this server) or Close.
func (f *Fleet) keep(lease clientv3.LeaseID) {
	t := time.NewTicker(f.opts.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		case <-f.renew:
		}
		ctx, cancel := context.WithTimeout(f.ctx, f.opts.LeaseTTL/3)
		_, err := f.cli.KeepAliveOnce(ctx, lease)
		cancel()
		switch {
		case f.ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			f.log.Warn("fleet: the lease ended while etcd was unreachable; registering again", "server", f.opts.Name)
			f.leaseGone(lease)
			return
		case err != nil:
			f.setUp(false, err)
		case !f.up.Load():
			f.setUp(true, nil)
			f.reassert(lease) // what failed or changed while etcd was away
		}
	}
}

// setUp records whether etcd answers, and logs each change.
func (f *Fleet) setUp(up bool, err error) {
	if f.up.Swap(up) == up {
		return
	}
	f.opts.Observer.Reachable(up)
	if up {
		f.log.Info("fleet: etcd is reachable", "server", f.opts.Name)
		f.poke(f.wake)
		return
	}
	f.log.Warn("fleet: etcd is unreachable; live sessions and visitors go on, new logins and registrations wait and are refused with 1014",
		"server", f.opts.Name, "err", err)
}

// reassert writes every claim this server holds again, under lease: one
// that is gone (the old lease ended) is created again; one that another
// server took meanwhile is given up, and its owner told (the session
// ends, or the mapping closes).
func (f *Fleet) reassert(lease clientv3.LeaseID) {
	f.mu.Lock()
	claims := make([]*claim, 0, len(f.names)+len(f.ports))
	for _, c := range f.names {
		claims = append(claims, c)
	}
	for _, c := range f.ports {
		claims = append(claims, c)
	}
	f.mu.Unlock()
	for _, c := range claims {
		start := time.Now()
		result := "ok"
		by, err := f.rewrite(lease, c)
		switch {
		case err != nil:
			result = "failed"
			f.setUp(false, err)
		case by != nil:
			result = "held"
			f.log.Warn("fleet: another server took this one's claim while etcd was unreachable; giving it up",
				"key", c.key, "holder", by.Server)
			c.lose(*by)
		}
		f.opts.Observer.Operation("reassert", result, time.Since(start))
		if err != nil {
			return // the next keepalive that works tries again
		}
	}
}

// rewrite writes c's record under lease unless another server's record
// is there: then it returns that holder.
func (f *Fleet) rewrite(lease clientv3.LeaseID, c *claim) (*holderRecord, error) {
	ctx, cancel := context.WithTimeout(f.ctx, f.opts.RegistryTimeout)
	defer cancel()
	put := clientv3.OpPut(c.key, string(c.value), clientv3.WithLease(lease))
	resp, err := f.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(c.key), "=", 0)).Then(put).Else(clientv3.OpGet(c.key)).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, nil // gone in between: the next reassert writes it
		}
		kv := kvs[0]
		if h := holderOf(kv.Value); h.Server != f.opts.Name {
			return &h, nil
		}
		if clientv3.LeaseID(kv.Lease) == lease {
			f.mu.Lock()
			c.rev = max(c.rev, kv.ModRevision)
			f.mu.Unlock()
			return nil, nil // still ours, under this lease
		}
		resp, err = f.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(c.key), "=", kv.ModRevision)).Then(put).Commit()
		if err != nil || !resp.Succeeded {
			return nil, err
		}
	}
	f.mu.Lock()
	c.rev = resp.Header.Revision
	f.mu.Unlock()
	return nil, nil
}

// watchLoop watches the names' records from the first lease on: a name
// this server holds, written by another server later than this server's
// claim, was taken over by a login there.
func (f *Fleet) watchLoop() {
	var rev int64
	for f.ctx.Err() == nil {
		if rev == 0 {
			if _, err := f.currentLease(f.ctx); err != nil {
				return
			}
			f.mu.Lock()
			rev = f.watchRev + 1
			f.mu.Unlock()
		}
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(f.ctx))
		for resp := range f.cli.Watch(ctx, f.key("names")+"/", clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			if resp.Err() != nil {
				if resp.CompactRevision != 0 {
					rev = resp.CompactRevision // what was compacted away, reassert covers
				}
				break
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut {
					f.nameWritten(string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision)
				}
			}
			rev = resp.Header.Revision + 1
		}
		cancel()
		f.pause(f.opts.LeaseTTL / 3)
	}
}

// nameWritten handles a write of a name's record.
func (f *Fleet) nameWritten(key string, value []byte, rev int64) {
	h := holderOf(value)
	if h.Server == f.opts.Name {
		return
	}
	f.mu.Lock()
	c := f.names[key]
	if c == nil || c.rev >= rev {
		c = nil
	}
	f.mu.Unlock()
	if c != nil {
		c.lose(h)
	}
}

// release is a claim let go whose record etcd may still have.
type release struct {
	key string
	rev int64
}

// releaseLoop deletes released records, each only if it is still the
// one this server wrote (a later claim, here or on another server,
// replaced it otherwise). What etcd does not take now is tried again
// when it answers; the lease's end takes it anyway.
func (f *Fleet) releaseLoop() {
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.wake:
		}
		for f.ctx.Err() == nil {
			f.mu.Lock()
			if len(f.pending) == 0 {
				f.mu.Unlock()
				break
			}
			r := f.pending[0]
			f.mu.Unlock()
			start := time.Now()
			ctx, cancel := context.WithTimeout(f.ctx, f.opts.RegistryTimeout)
			_, err := f.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(r.key), "=", r.rev)).Then(clientv3.OpDelete(r.key)).Commit()
			cancel()
			if err != nil {
				f.opts.Observer.Operation("release", "failed", time.Since(start))
				break // again when etcd is back (setUp pokes wake)
			}
			f.opts.Observer.Operation("release", "ok", time.Since(start))
			f.mu.Lock()
			f.pending = f.pending[1:]
			f.mu.Unlock()
		}
	}
}
