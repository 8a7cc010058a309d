package control

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Codec errors. Both map to CodeMalformed.
var (
	// ErrFrameSize is a length prefix of 0 or above MaxFrameSize. The body
	// is neither read nor allocated.
	ErrFrameSize = errors.New("control: frame length out of range")
	// ErrMalformed is a frame body that is not a valid message.
	ErrMalformed = errors.New("control: malformed frame")
	// ErrHeartbeatTimeout ends a session from which nothing at all was
	// read for heartbeat_timeout, on either side.
	ErrHeartbeatTimeout = errors.New("control: heartbeat timeout")
)

const headerLen = 4

// AppendFrame appends m as one frame (4-byte big-endian length, then the
// JSON object with "type" first) to dst.
func AppendFrame(dst []byte, m Message) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return dst, fmt.Errorf("encode %s: %w", m.Type(), err)
	}
	typ := `{"type":"` + m.Type() + `"`
	n := len(typ) + len(body) // "{...}" loses "{" and gains "," or nothing
	if len(body) > 2 {
		n++ // the comma
	}
	n--
	if n > MaxFrameSize {
		return dst, fmt.Errorf("encode %s: %w: %d bytes", m.Type(), ErrFrameSize, n)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, typ...)
	if len(body) > 2 {
		dst = append(dst, ',')
	}
	return append(dst, body[1:]...), nil
}

// WriteFrame writes m as one frame in a single Write call.
func WriteFrame(w io.Writer, m Message) error {
	b, err := AppendFrame(make([]byte, 0, 128), m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadFrame reads exactly one frame from r and decodes it. It never reads
// past the frame, so bytes that follow (a data stream's payload) stay in r.
// The length is checked before the body is allocated.
func ReadFrame(r io.Reader) (Message, error) { return ReadFrameMax(r, MaxFrameSize) }

// ReadFrameMax is ReadFrame with a lower limit than MaxFrameSize (a
// server's max_frame_size); a larger max is MaxFrameSize.
func ReadFrameMax(r io.Reader, max int) (Message, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > uint32(min(max, MaxFrameSize)) {
		return nil, fmt.Errorf("%w: %d", ErrFrameSize, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return Decode(body)
}

// Decode parses one frame body: a JSON object whose "type" names a message
// of the catalog, with valid fields. Unknown fields are ignored, so later
// minor versions may add some.
func Decode(body []byte) (Message, error) {
	var head struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if head.Type == nil {
		return nil, fmt.Errorf("%w: no type", ErrMalformed)
	}
	mk, ok := catalog[*head.Type]
	if !ok {
		return nil, fmt.Errorf("%w: unknown type %.32q", ErrMalformed, *head.Type)
	}
	m := mk()
	if err := json.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, m.Type(), err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, m.Type(), err)
	}
	return m, nil
}
