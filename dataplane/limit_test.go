package dataplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestNewLimiter(t *testing.T) {
	tests := []struct {
		name      string
		rate      int64
		wantBurst int
	}{
		{"none", 0, 0},
		{"negative", -1, 0},
		{"below the minimum burst", 1 << 10, 1 << 10},
		{"minimum burst", 1 << 20, 104857},
		{"a tenth", 100 << 20, 10 << 20},
		{"floor of 64 KiB", 200 << 10, 64 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.rate)
			if tt.wantBurst == 0 {
				if l != nil {
					t.Fatalf("NewLimiter(%d) = %v, want nil", tt.rate, l)
				}
				return
			}
			if l.Burst() != tt.wantBurst || l.Limit() != rate.Limit(tt.rate) {
				t.Errorf("NewLimiter(%d) = limit %v burst %d, want %d burst %d", tt.rate, l.Limit(), l.Burst(), tt.rate, tt.wantBurst)
			}
		})
	}
}

// limitedRelay sets up visitor <-> [a | RelayWith lim | b] <-> backend
// over real TCP.
func limitedRelay(t *testing.T, ctx context.Context, lim Limits) (visitor, backend *net.TCPConn, done chan Result) {
	t.Helper()
	visitor, a := tcpPair(t)
	b, backend := tcpPair(t)
	done = make(chan Result, 1)
	go func() { done <- RelayWith(ctx, a, b, defaultPool, nil, lim) }()
	t.Cleanup(func() {
		visitor.Close()
		backend.Close()
	})
	return visitor, backend, done
}

// TestRelayLimitedDirection: 512 KiB through a 1 MiB/s limiter (burst
// 100 KiB) takes at least about 0.4 s, and arrives intact.
func TestRelayLimitedDirection(t *testing.T) {
	visitor, backend, done := limitedRelay(t, context.Background(), Limits{AToB: []*rate.Limiter{NewLimiter(1 << 20)}})
	in := bytes.Repeat([]byte("0123456789abcdef"), 512<<10/16)
	start := time.Now()
	go func() {
		_, _ = visitor.Write(in)
		_ = visitor.CloseWrite()
	}()
	got, err := io.ReadAll(backend)
	elapsed := time.Since(start)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(in) {
		t.Fatalf("backend read %d bytes, err %v; want the %d bytes sent", len(got), err, len(in))
	}
	if elapsed < 300*time.Millisecond {
		t.Errorf("512 KiB at 1 MiB/s took %v, want at least 300ms", elapsed)
	}
	_ = backend.CloseWrite()
	if r := wait(t, done); r.Err != nil || r.AToB != int64(len(in)) {
		t.Errorf("relay = %+v, want AToB %d and no error", r, len(in))
	}
}

// TestRelayLimitedAbortIsPrompt: a relay waiting on a limiter (1 KiB/s,
// 64 KiB queued: a minute's worth) returns as soon as its ctx ends.
func TestRelayLimitedAbortIsPrompt(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	visitor, backend, done := limitedRelay(t, ctx, Limits{AToB: []*rate.Limiter{NewLimiter(1 << 10)}})
	if _, err := visitor.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	// The burst's 1 KiB arrives: the relay now waits on the limiter.
	if _, err := io.ReadFull(backend, make([]byte, 1<<10)); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	cancel(stop)
	r := wait(t, done) // fails after 10s
	if !errors.Is(r.Err, stop) {
		t.Errorf("relay err = %v, want the ctx's cause %v", r.Err, stop)
	}
	if r.AToB >= 64<<10 {
		t.Errorf("relay moved %d bytes, want fewer than the 64 KiB queued", r.AToB)
	}
}

// TestRelayLimitOneDirectionOnly: while a →b transfer is held at
// 64 KiB/s, 4 MiB the other way arrive intact before the limited one
// has moved 1 MiB (which it needs about 15 s for).
func TestRelayLimitOneDirectionOnly(t *testing.T) {
	var tr Traffic
	ctx, cancel := context.WithCancel(context.Background())
	visitor, a := tcpPair(t)
	b, backend := tcpPair(t)
	done := make(chan Result, 1)
	go func() {
		done <- RelayWith(ctx, a, b, defaultPool, &tr, Limits{AToB: []*rate.Limiter{NewLimiter(64 << 10)}})
	}()
	defer func() {
		cancel()
		wait(t, done)
		visitor.Close()
		backend.Close()
	}()
	go func() { _, _ = visitor.Write(make([]byte, 1<<20)) }() // ends at the Close
	out := bytes.Repeat([]byte("fedcba9876543210"), 4<<20/16)
	go func() { _, _ = backend.Write(out) }()
	got := make([]byte, len(out))
	if _, err := io.ReadFull(visitor, got); err != nil || !bytes.Equal(got, out) {
		t.Fatalf("visitor read: err %v, intact %v; want 4 MiB intact", err, bytes.Equal(got, out))
	}
	if n := tr.AToB(); n >= 1<<20 {
		t.Errorf("limited direction moved %d bytes meanwhile, want less than 1 MiB", n)
	}
}

// TestRelaySharedLimiter: two relays on one 1 MiB/s limiter share it:
// 256 KiB each (512 KiB in all, less a 100 KiB burst) take at least
// about 0.4 s.
func TestRelaySharedLimiter(t *testing.T) {
	l := NewLimiter(1 << 20)
	in := make([]byte, 256<<10)
	start := time.Now()
	errs := make(chan error, 2)
	for range 2 {
		visitor, backend, done := limitedRelay(t, context.Background(), Limits{AToB: []*rate.Limiter{l}})
		go func() {
			_, _ = visitor.Write(in)
			_ = visitor.CloseWrite()
			n, err := io.Copy(io.Discard, backend)
			if err == nil && n != int64(len(in)) {
				err = io.ErrUnexpectedEOF
			}
			_ = backend.CloseWrite()
			<-done
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if elapsed := time.Since(start); elapsed < 300*time.Millisecond {
		t.Errorf("2 × 256 KiB on one 1 MiB/s limiter took %v, want at least 300ms", elapsed)
	}
}

// TestRelayLimitWaitIsCounted: the time a limiter holds bytes back is
// counted in Traffic, for the limited direction only: 512 KiB through a
// 1 MiB/s limiter (a 100 KiB burst) wait about 0.4 s in all, no more
// than the transfer took; the bytes the other way, and an unlimited
// relay's, wait nothing.
func TestRelayLimitWaitIsCounted(t *testing.T) {
	var limited, free Traffic
	for _, tc := range []struct {
		tr  *Traffic
		lim Limits
	}{{&limited, Limits{AToB: []*rate.Limiter{NewLimiter(1 << 20)}}}, {&free, Limits{}}} {
		visitor, a := tcpPair(t)
		b, backend := tcpPair(t)
		done := make(chan Result, 1)
		go func() { done <- RelayWith(context.Background(), a, b, defaultPool, tc.tr, tc.lim) }()
		in := bytes.Repeat([]byte("0123456789abcdef"), 512<<10/16)
		start := time.Now()
		go func() {
			_, _ = visitor.Write(in)
			_ = visitor.CloseWrite()
		}()
		go func() {
			_, _ = backend.Write(in) // the unlimited direction
			_ = backend.CloseWrite()
		}()
		got, err := io.ReadAll(backend)
		back, err2 := io.ReadAll(visitor)
		elapsed := time.Since(start)
		if err != nil || err2 != nil || !bytes.Equal(got, in) || !bytes.Equal(back, in) {
			t.Fatalf("relay moved %d and %d bytes (%v, %v), want %d each way intact", len(got), len(back), err, err2, len(in))
		}
		if r := wait(t, done); r.Err != nil {
			t.Fatalf("relay = %+v", r)
		}
		visitor.Close()
		backend.Close()
		if tc.tr == &limited && (limited.WaitAToB() < 200*time.Millisecond || limited.WaitAToB() > elapsed) {
			t.Errorf("limited direction waited %v over a %v transfer, want about 0.4s and no more than the transfer", limited.WaitAToB(), elapsed)
		}
	}
	if d := limited.WaitBToA(); d != 0 {
		t.Errorf("the unlimited direction of a limited relay waited %v, want 0", d)
	}
	if a, b := free.WaitAToB(), free.WaitBToA(); a != 0 || b != 0 {
		t.Errorf("an unlimited relay waited %v and %v, want 0", a, b)
	}
}
