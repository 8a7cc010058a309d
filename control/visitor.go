package control

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// visitorHandler serves each visitor of m: open a data stream, send the
// open_data_channel header, and relay. The visitor's first bytes follow the
// header at once; the client's bytes reach the visitor only after an ok
// ack (see ackConn).
func (ss *serverSession) visitorHandler(m *mapping) dataplane.Handler {
	return func(ctx context.Context, visitor net.Conn) {
		start := time.Now()
		deadline := start.Add(ss.srv.opts.StreamOpenTimeout)
		// OpenStream cannot be cancelled; a visitor must not wait on it
		// past stream_open_timeout.
		guard := time.AfterFunc(ss.srv.opts.StreamOpenTimeout, func() { dataplane.Reset(visitor) })
		st, err := ss.openData(m, visitor, deadline)
		if !guard.Stop() && err == nil {
			err = fmt.Errorf("open data stream: %w", context.DeadlineExceeded)
			_ = st.Close()
		}
		if err != nil {
			dataplane.Reset(visitor)
			ss.log.Debug("visitor reset", "mapping", m.name, "visitor", visitor.RemoteAddr().String(), "err", err)
			return
		}
		ds := &dataStream{streamConn: &ackConn{Stream: st, deadline: deadline}, id: st.StreamID(), send: ss.w.queue}
		rctx := ss.streams.add(ctx, ds)
		res := dataplane.RelayWith(rctx, visitor, ds, ss.srv.bufs)
		ss.streams.remove(ds)
		attrs := []any{"mapping", m.name, "visitor", visitor.RemoteAddr().String(),
			"bytes_in", res.AToB, "bytes_out", res.BToA,
			"duration", time.Since(start).Round(time.Microsecond).String()}
		if res.Err != nil {
			attrs = append(attrs, "err", res.Err)
			if code := CodeOf(res.Err); code != 0 {
				attrs = append(attrs, "code", int(code))
			}
		}
		ss.log.Debug("visitor closed", attrs...)
	}
}

// openData opens a data stream and writes its header.
func (ss *serverSession) openData(m *mapping, visitor net.Conn, deadline time.Time) (*mux.Stream, error) {
	st, err := ss.mux.Open()
	if err != nil {
		return nil, fmt.Errorf("open data stream: %w", err)
	}
	_ = st.SetWriteDeadline(deadline)
	err = WriteFrame(st, &OpenDataChannel{Name: m.name, RemotePort: m.port, Visitor: visitor.RemoteAddr().String()})
	_ = st.SetWriteDeadline(time.Time{})
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("write data stream header: %w", err)
	}
	return st, nil
}

// ackConn is the server's end of a data stream whose ack is not read yet.
// Writes pass straight through; the first Read first reads the client's
// data_channel_ack under the open deadline, and fails the relay (so the
// visitor is reset) unless the ack is ok.
type ackConn struct {
	*mux.Stream
	deadline time.Time

	once sync.Once // reading the ack; then err is set for good
	err  error
}

var _ net.Conn = (*ackConn)(nil)

func (a *ackConn) Read(p []byte) (int, error) {
	a.once.Do(a.readAck)
	if a.err != nil {
		return 0, a.err
	}
	return a.Stream.Read(p)
}

// WaitRead waits for the ack, then for data, without a buffer.
func (a *ackConn) WaitRead() error {
	a.once.Do(a.readAck)
	if a.err != nil {
		return a.err
	}
	return a.Stream.WaitRead()
}

func (a *ackConn) readAck() {
	_ = a.Stream.SetReadDeadline(a.deadline)
	m, err := ReadFrame(a.Stream)
	_ = a.Stream.SetReadDeadline(time.Time{})
	switch {
	case err != nil:
		a.err = fmt.Errorf("read data_channel_ack: %w", err)
	default:
		ack, ok := m.(*DataChannelAck)
		switch {
		case !ok:
			a.err = fmt.Errorf("%w: want data_channel_ack, got %s", ErrMalformed, m.Type())
		case ack.Status != StatusOK:
			a.err = &RejectError{Code: ack.Code, Reason: ack.Reason}
		}
	}
}
