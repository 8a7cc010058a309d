package dataplane

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the rate limiters a relay waits on before it writes, in
// tokens of one byte: AToB for the bytes read from a and written to b,
// BToA for the other direction. Every limiter of a direction is waited
// on (so the strictest wins); a nil limiter, or none, is no limit. A
// limiter may be shared by many relays, which then share its rate.
type Limits struct {
	AToB, BToA []*rate.Limiter
}

// active reports whether any limiter is set.
func (l Limits) active() bool {
	for _, side := range [][]*rate.Limiter{l.AToB, l.BToA} {
		for _, x := range side {
			if x != nil {
				return true
			}
		}
	}
	return false
}

// MinBurst is the smallest burst NewLimiter gives a limiter whose rate
// allows it.
const MinBurst = 64 << 10

// NewLimiter returns a limiter of bytesPerSec bytes a second, with a
// burst of a tenth of a second's worth, at least MinBurst and at most
// one second's worth; nil when bytesPerSec is 0 or less (no limit).
func NewLimiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := min(max(MinBurst, bytesPerSec/10), bytesPerSec)
	return rate.NewLimiter(rate.Limit(bytesPerSec), int(min(burst, 1<<30)))
}

// waitLimits waits on every limiter in lims, one after the other, until
// each lets n bytes through (at most its burst, for a datagram larger
// than that), and adds to waited the delay they imposed. It is
// rate.Limiter.WaitN made to tell how long it held the bytes back: a
// limiter with tokens to spare imposes no delay and starts no timer. The
// relays' contexts have no deadline, so WaitN's check of one is left
// out. It ends early, with ctx's cause, when ctx ends (the relay is
// aborted); ctx may be nil when every limiter is.
func waitLimits(ctx context.Context, lims []*rate.Limiter, n int, waited *atomic.Int64) error {
	for _, l := range lims {
		if l == nil {
			continue
		}
		if err := context.Cause(ctx); err != nil {
			return err
		}
		k := max(min(n, l.Burst()), 1)
		now := time.Now()
		res := l.ReserveN(now, k)
		if !res.OK() {
			return fmt.Errorf("dataplane: %d bytes exceed a limiter's burst of %d", k, l.Burst())
		}
		d := res.DelayFrom(now)
		if d == 0 {
			continue
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
			waited.Add(int64(d))
		case <-ctx.Done():
			t.Stop()
			res.Cancel()
			waited.Add(int64(time.Since(now)))
			return context.Cause(ctx)
		}
	}
	return nil
}
