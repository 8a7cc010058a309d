package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// finWait bounds how long a datagram relay that has ended its flow waits
// for the stream's peer to end it too.
var finWait = 10 * time.Second // a var for tests

// datagramBufs hold a framed datagram: its 2-byte length and the most a
// datagram can be, behind room for a PROXY protocol v2 header.
var datagramBufs = NewPool(2 + maxPrefix + MaxDatagram)

// maxPrefix bounds DatagramOptions.Prefix: a PROXY v2 header with two
// IPv6 addresses is 52 bytes; TLVs are not written.
const maxPrefix = 256

// DatagramOptions tune RelayDatagrams. The zero value works.
type DatagramOptions struct {
	// Idle ends the flow after this long without a datagram either way;
	// 0: never (the peer ends it).
	Idle time.Duration
	// Traffic counts the datagrams' bytes as they move (the frames'
	// length prefixes are not counted), and the time Limits held them
	// back: AToB from the flow to the stream, unless Reverse.
	Traffic *Traffic
	// Reverse counts the stream's datagrams to the flow as AToB, in
	// Traffic and in the Result: the client's view, where the visitor's
	// datagrams come on the stream and the flow is the local service.
	Reverse bool
	// Limits are waited on before each datagram is written, as Relay's.
	Limits Limits
	// Prefix is written before each datagram sent to the flow, in the
	// same datagram: the PROXY protocol v2 header of a UDP flow
	// (at most 256 bytes).
	Prefix []byte
	// Stop, when closed, ends the flow as its idle timeout would: a
	// clean end, FIN and all (a client that is stopping: a UDP flow has
	// nothing to finish).
	Stop <-chan struct{}
	// Dropped, when set, is told of each datagram the relay drops: one
	// the flow's socket refused to send (no one listens at its address,
	// or the datagram is too large for it). It must not block.
	Dropped func()
}

// RelayDatagrams relays one UDP flow over a data stream (protocol.md 7.8):
// each datagram read from flow is written to stream behind its 2-byte
// big-endian length, and each one framed so on stream is written to flow,
// so a datagram is never split or merged. A datagram the flow's socket
// cannot send is dropped (o.Dropped), never an end.
//
// The flow ends cleanly when it idles for o.Idle, when flow reads EOF, or
// when the stream's peer ends it (EOF on stream): this side then closes
// flow, half-closes stream (FIN) and waits, up to 10 s, for the peer's FIN.
// It aborts, as Relay does, on a stream error, a broken frame, or when ctx
// ends: a stream that is an Aborter is aborted its own way and drained.
// RelayDatagrams owns flow and stream: both are closed when it returns.
func RelayDatagrams(ctx context.Context, flow, stream net.Conn, o DatagramOptions) Result {
	if o.Traffic == nil {
		o.Traffic = &Traffic{}
	}
	if len(o.Prefix) > maxPrefix {
		o.Prefix = nil
	}
	r := &dgramRelay{flow: flow, stream: stream, o: o, start: time.Now(), aborted: make(chan struct{}), stopWaits: func() {},
		upCount: &o.Traffic.aToB, downCount: &o.Traffic.bToA, upWait: &o.Traffic.waitAToB, downWait: &o.Traffic.waitBToA}
	if o.Reverse {
		r.upCount, r.downCount = r.downCount, r.upCount
		r.upWait, r.downWait = r.downWait, r.upWait
	}
	r.waitCtx = ctx
	if o.Limits.active() {
		r.waitCtx, r.stopWaits = context.WithCancel(ctx)
		defer r.stopWaits()
	}
	stop := context.AfterFunc(ctx, func() { r.abort(context.Cause(ctx)) })
	if o.Idle > 0 {
		r.idle = time.AfterFunc(o.Idle, r.checkIdle)
	}
	if o.Stop != nil {
		done := make(chan struct{})
		var watch sync.WaitGroup
		defer func() { close(done); watch.Wait() }()
		watch.Go(func() {
			select {
			case <-o.Stop:
				r.endFlow()
			case <-done:
			}
		})
	}
	var wg sync.WaitGroup
	wg.Go(r.up)
	r.down()
	wg.Wait()
	stop()
	r.finished.Store(true)
	if r.idle != nil {
		r.idle.Stop()
	}
	r.once.Do(func() {})
	_ = flow.Close()
	_ = stream.Close()
	if o.Reverse {
		r.res.AToB, r.res.BToA = r.res.BToA, r.res.AToB
	}
	return r.res
}

type dgramRelay struct {
	flow, stream net.Conn
	o            DatagramOptions
	upCount      *atomic.Int64 // o.Traffic's count of the flow's datagrams
	downCount    *atomic.Int64 // and of the stream's
	upWait       *atomic.Int64 // o.Traffic's time the flow's datagrams waited on Limits
	downWait     *atomic.Int64 // and the stream's
	start        time.Time
	last         atomic.Int64 // time since start of the last datagram either way, ns
	idle         *time.Timer  // nil without o.Idle
	waitCtx      context.Context
	stopWaits    context.CancelFunc
	ended        atomic.Bool // the flow was closed by this relay: its read errors are its end
	finished     atomic.Bool // RelayDatagrams is returning: the idle timer stops
	endOnce      sync.Once
	once         sync.Once
	aborted      chan struct{}
	res          Result // AToB by up, BToA by down, Err by once
}

// touch records a datagram's passing, for the idle timer.
func (r *dgramRelay) touch() { r.last.Store(int64(time.Since(r.start))) }

// checkIdle ends the flow once it has idled for o.Idle, or sets the timer
// for when it will have.
func (r *dgramRelay) checkIdle() {
	if r.finished.Load() {
		return
	}
	quiet := time.Since(r.start) - time.Duration(r.last.Load())
	if left := r.o.Idle - quiet; left > 0 {
		r.idle.Reset(left)
		return
	}
	r.endFlow()
}

// endFlow closes the flow, so that up reads its end and sends the FIN.
func (r *dgramRelay) endFlow() {
	r.endOnce.Do(func() {
		r.ended.Store(true)
		_ = r.flow.Close()
	})
}

// up copies datagrams from the flow to the stream, framed; at the flow's
// end it half-closes the stream.
func (r *dgramRelay) up() {
	w := waiterOf(r.flow)
	for {
		if w != nil {
			if err := w.WaitRead(); err != nil && !r.refused(err) {
				r.upEnded(err)
				return
			}
		}
		bp := datagramBufs.get()
		buf := *bp
		n, err := r.flow.Read(buf[2 : 2+MaxDatagram])
		if err != nil {
			datagramBufs.put(bp)
			if r.refused(err) {
				continue
			}
			r.upEnded(err)
			return
		}
		r.touch()
		binary.BigEndian.PutUint16(buf, uint16(n))
		end, total := 2+n, n
		if br, ok := r.flow.(batchReader); ok {
			// Datagrams that queued meanwhile go in the same write: a
			// frame per write would make the stream's per-write cost the
			// flow's ceiling.
			for len(buf)-end > 2 {
				k, ok := br.TryRead(buf[end+2:])
				if !ok {
					break
				}
				binary.BigEndian.PutUint16(buf[end:], uint16(k))
				end, total = end+2+k, total+k
			}
		}
		err = waitLimits(r.waitCtx, r.o.Limits.AToB, total, r.upWait)
		if err == nil {
			_, err = r.stream.Write(buf[:end])
		}
		datagramBufs.put(bp)
		if err != nil {
			r.abort(err)
			return
		}
		r.upCount.Add(int64(total))
		r.res.AToB += int64(total)
	}
}

// batchReader is a flow that can hand over a queued datagram without
// waiting (Flow).
type batchReader interface {
	TryRead(p []byte) (int, bool)
}

// refused reports whether err is a connected UDP socket's report that the
// last datagram found no one listening (ICMP port unreachable): the
// datagram is lost, the flow goes on.
func (r *dgramRelay) refused(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		r.drop()
		return true
	}
	return false
}

func (r *dgramRelay) drop() {
	if r.o.Dropped != nil {
		r.o.Dropped()
	}
}

// upEnded handles the end of the flow's reads: its EOF, or its closing by
// this relay, is the flow's clean end; any other error aborts.
func (r *dgramRelay) upEnded(err error) {
	if !errors.Is(err, io.EOF) && !r.ended.Load() {
		r.abort(err)
		return
	}
	select {
	case <-r.aborted:
		return
	default:
	}
	r.endFlow()
	// The peer has finWait to end its side; a peer that never does is
	// aborted.
	_ = r.stream.SetReadDeadline(time.Now().Add(finWait))
	if err := closeWrite(r.stream); err != nil {
		r.abort(err)
	}
}

// down copies framed datagrams from the stream to the flow until the
// stream's EOF, which ends the flow.
func (r *dgramRelay) down() {
	w := waiterOf(r.stream)
	var hdr [2]byte
	for {
		if w != nil {
			if err := w.WaitRead(); err != nil {
				r.downEnded(err)
				return
			}
		}
		if _, err := io.ReadFull(r.stream, hdr[:]); err != nil {
			r.downEnded(err)
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		bp := datagramBufs.get()
		buf := (*bp)[:len(r.o.Prefix)+n]
		copy(buf, r.o.Prefix)
		if _, err := io.ReadFull(r.stream, buf[len(r.o.Prefix):]); err != nil {
			datagramBufs.put(bp)
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the stream ended inside a frame
			}
			r.downEnded(err)
			return
		}
		r.touch()
		err := waitLimits(r.waitCtx, r.o.Limits.BToA, n, r.downWait)
		if err == nil {
			_, err = r.flow.Write(buf)
		}
		datagramBufs.put(bp)
		switch {
		case err == nil:
			r.downCount.Add(int64(n))
			r.res.BToA += int64(n)
		case r.ended.Load() && errors.Is(err, net.ErrClosed):
			// the flow has ended; what the peer still sends is dropped
		case r.aborting():
			r.drain()
			return
		default:
			// The socket would not send it (ECONNREFUSED, EMSGSIZE,
			// no buffer space): a datagram lost, as UDP loses them.
			r.drop()
		}
	}
}

// downEnded handles the end of the stream's reads: EOF ends the flow,
// anything else aborts; an aborted relay drains the stream to its end.
func (r *dgramRelay) downEnded(err error) {
	if errors.Is(err, io.EOF) && !r.aborting() {
		r.endFlow()
		return
	}
	r.abort(err)
	r.drain()
}

func (r *dgramRelay) aborting() bool {
	select {
	case <-r.aborted:
		return true
	default:
		return false
	}
}

// drain reads the aborted stream until it ends, so that its peer's writes
// never wait on a reader that is gone.
func (r *dgramRelay) drain() {
	_, _ = io.Copy(io.Discard, readerOnly{r.stream})
}

// abort records the first error, aborts the stream and closes the flow.
func (r *dgramRelay) abort(err error) {
	r.once.Do(func() {
		r.stopWaits()
		r.res.Err = err
		abortConn(r.stream)
		r.endFlow()
		close(r.aborted)
	})
}
