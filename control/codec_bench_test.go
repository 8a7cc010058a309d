package control

import (
	"bytes"
	"testing"
)

// BenchmarkFrame encodes and decodes the frames every visitor connection
// costs: the data stream's header and its ack.
func BenchmarkFrame(b *testing.B) {
	msgs := map[string]Message{
		"open_data_channel": &OpenDataChannel{Name: "web", RemotePort: 18080, Visitor: "203.0.113.7:51234"},
		"data_channel_ack":  &DataChannelAck{Status: StatusOK},
		"ping":              &Ping{Time: 1764165600000},
	}
	for name, m := range msgs {
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			for b.Loop() {
				out, err := AppendFrame(buf[:0], m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ReadFrame(bytes.NewReader(out)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
