package dataplane

import "golang.org/x/time/rate"

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
