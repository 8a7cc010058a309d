package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/time/rate"

	"github.com/gotunnel-mux/gotunnel-mux/control"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// visitorHandler serves each visitor of m: open a data stream, send the
// open_data_channel header, and relay. The visitor's first bytes follow the
// header at once; the client's bytes reach the visitor only after an ok
// ack (see DataStream.ack).
func (ss *serverSession) visitorHandler(m *mapping) dataplane.Handler {
	return func(ctx context.Context, visitor net.Conn) {
		start := time.Now()
		m.counters.visitors.Add(1)
		deadline := start.Add(ss.srv.opts.StreamOpenTimeout)
		// OpenStream cannot be cancelled; a visitor must not wait on it
		// past stream_open_timeout.
		guard := time.AfterFunc(ss.srv.opts.StreamOpenTimeout, func() { dataplane.Reset(visitor) })
		st, err := ss.openData(m, visitor, deadline)
		late := !guard.Stop() && err == nil
		if err != nil {
			dataplane.Reset(visitor)
			ss.log.Debug("visitor reset", "mapping", m.name, "visitor", visitor.RemoteAddr().String(), "err", err)
			return
		}
		ds := ss.streams.Open(st, deadline)
		ds.OnAck(func(err error) {
			switch code := control.CodeOf(err); {
			case err == nil:
				ss.srv.obs.StreamOpened(time.Since(start))
			case code != 0:
				ss.srv.obs.Refused(code)
			}
		})
		rctx := ss.streams.Add(ctx, ds)
		defer ss.streams.Remove(ds)
		if late {
			// The guard has reset the visitor; the client may be serving
			// the stream already: abort it as any other.
			ds.Abort()
			ds.Drain()
			ss.log.Debug("visitor reset", "mapping", m.name, "visitor", visitor.RemoteAddr().String(),
				"err", fmt.Errorf("open data stream: %w", context.DeadlineExceeded))
			return
		}
		var res dataplane.Result
		if m.udp {
			res = dataplane.RelayDatagrams(rctx, visitor, ds, dataplane.DatagramOptions{Idle: m.udpIdle,
				Traffic: &m.counters.traffic, Limits: ss.limits(m), Dropped: m.counters.dropDatagram})
		} else {
			res = dataplane.RelayWith(rctx, visitor, ds, ss.srv.bufs, &m.counters.traffic, ss.limits(m))
		}
		ss.logVisitor(ss.log, m.name, visitor.RemoteAddr().String(), start, res)
	}
}

// limits are the limiters of a visitor of m: the bytes read from the
// visitor wait on the mapping's own limit and the client's, the bytes
// written to it on the client's. The client's is the policy's in force
// when the visitor came.
func (ss *serverSession) limits(m *mapping) dataplane.Limits {
	in, out := ss.bw.limiters(ss.srv.pol.Load().MaxBandwidthPerClient)
	var lim dataplane.Limits
	for _, l := range []*rate.Limiter{m.bandwidth, in} {
		if l != nil {
			lim.AToB = append(lim.AToB, l)
		}
	}
	if out != nil {
		lim.BToA = []*rate.Limiter{out}
	}
	return lim
}

// logVisitor writes the access log line of one visitor connection: at
// info unless NoAccessLog, else at debug. "end" says how it ended: "closed"
// (both directions finished), "refused" (with the client's code), or
// "aborted" (with the error, and its code when it has one).
func (ss *serverSession) logVisitor(log *slog.Logger, mapping, visitor string, start time.Time, res dataplane.Result) {
	attrs := []any{"mapping", mapping, "visitor", visitor, "bytes_in", res.AToB, "bytes_out", res.BToA,
		"duration", time.Since(start).Round(time.Microsecond).String()}
	var re *control.RejectError
	switch {
	case res.Err == nil:
		attrs = append(attrs, "end", "closed")
	case errors.As(res.Err, &re):
		attrs = append(attrs, "end", "refused", "code", int(re.Code), "reason", re.Reason)
	default:
		attrs = append(attrs, "end", "aborted", "err", res.Err)
		if code := control.CodeOf(res.Err); code != 0 {
			attrs = append(attrs, "code", int(code))
		}
	}
	level := slog.LevelInfo
	if ss.srv.opts.NoAccessLog {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, "visitor closed", attrs...)
}

// openData opens a data stream and writes its header: the visitor's
// address and the public address it connected to.
func (ss *serverSession) openData(m *mapping, visitor net.Conn, deadline time.Time) (*mux.Stream, error) {
	st, err := ss.mux.Open()
	if err != nil {
		return nil, fmt.Errorf("open data stream: %w", err)
	}
	_ = st.SetWriteDeadline(deadline)
	hdr := &control.OpenDataChannel{Name: m.name, RemotePort: m.port,
		Visitor: visitor.RemoteAddr().String(), Public: visitor.LocalAddr().String()}
	if m.udp {
		hdr.Protocol = control.ProtocolUDP
	}
	err = control.WriteFrame(st, hdr)
	_ = st.SetWriteDeadline(time.Time{})
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("write data stream header: %w", err)
	}
	return st, nil
}
