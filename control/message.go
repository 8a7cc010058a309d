package control

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// Version is the wire protocol version this build speaks. A login with any
// other version is refused with CodeUnsupportedVersion.
const Version = 1

// MaxFrameSize is the largest control frame body accepted, in bytes. A length
// prefix of 0 or above this is a protocol error (CodeMalformed).
const MaxFrameSize = 64 << 10

// Status values of the replies.
const (
	StatusOK   = "ok"
	StatusFail = "fail"
)

// The protocols of a mapping (Register.Protocol, OpenDataChannel.Protocol).
const (
	// ProtocolTCP is version 1's first protocol: a data stream carries
	// one visitor connection's bytes.
	ProtocolTCP = "tcp"
	// ProtocolUDP is a UDP mapping: a data stream carries one visitor
	// flow's datagrams, each framed with a 2-byte length (protocol.md
	// 7.8). Sent only to a server that names FeatureUDP.
	ProtocolUDP = "udp"
)

// MaxUDPIdleTimeout bounds Register.UDPIdleTimeout, in milliseconds: a day.
const MaxUDPIdleTimeout = 24 * 60 * 60 * 1000

// Message is one control frame's payload. The concrete types below are the
// whole catalog; Type returns the wire value of the "type" field.
type Message interface {
	Type() string
	validate() error
}

// Login is the client's first frame on the control stream.
type Login struct {
	Version  int    `json:"version"`
	Token    string `json:"token"`
	Name     string `json:"name"`
	ClientID string `json:"client_id"`
}

// LoginResp answers Login (server to client).
type LoginResp struct {
	Status    string `json:"status"`
	Code      Code   `json:"code,omitempty"`
	Reason    string `json:"reason,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	// Features are what this server does beyond version 1's first
	// messages (FeatureUnregister); a client uses a feature only when the
	// server names it. Optional.
	Features []string `json:"features,omitempty"`
}

// The features a server may name in LoginResp.Features.
const (
	// FeatureUnregister is the feature of a server that takes Unregister.
	FeatureUnregister = "unregister"
	// FeatureVisitorACL is the feature of a server that enforces
	// Register.AllowIPs and Register.DenyIPs. A client registers a mapping
	// with either list only with a server that names it: an older server
	// would ignore the lists and let every visitor in.
	FeatureVisitorACL = "visitor_acl"
	// FeatureBandwidth is the feature of a server that enforces
	// Register.Bandwidth on the bytes its visitors send. Towards an older
	// server a client leaves the field out and limits only its own
	// direction (the bytes from the local service).
	FeatureBandwidth = "bandwidth"
	// FeatureUDP is the feature of a server that serves UDP mappings
	// (Register.Protocol "udp"). An older server refuses such a register
	// as malformed and ends the session, so a client never sends one to
	// it.
	FeatureUDP = "udp"
)

// MinBandwidth is the smallest Register.Bandwidth other than 0 (none),
// in bytes a second.
const MinBandwidth = 1 << 10

// maxFeatures bounds LoginResp.Features.
const maxFeatures = 32

// Register asks the server to bind a public port for one mapping.
type Register struct {
	Name       string `json:"name"`
	Protocol   string `json:"protocol"`
	RemotePort int    `json:"remote_port"`
	LocalAddr  string `json:"local_addr"`
	Online     bool   `json:"online"`
	// PreferPort, with RemotePort 0, is the port the mapping had before
	// a reconnect: the server binds it again when it is free and allowed,
	// and otherwise picks a port as for 0. Optional.
	PreferPort int `json:"prefer_port,omitempty"`
	// AllowIPs and DenyIPs are the mapping's visitor lists, CIDRs such as
	// "203.0.113.0/24" (ParsePrefixes): a visitor is let in when it is in
	// no DenyIPs prefix and, if AllowIPs is not empty, in one of them; the
	// server's own lists apply first. At most MaxPrefixes each. Optional;
	// sent only to a server that names FeatureVisitorACL.
	AllowIPs []string `json:"allow_ips,omitempty"`
	DenyIPs  []string `json:"deny_ips,omitempty"`
	// Bandwidth is the mapping's limit in bytes a second, each direction,
	// shared by all its visitors: the server applies it to the bytes it
	// reads from visitors, the client to the bytes it reads from the
	// local service. 0 (omitted): none; else at least MinBandwidth.
	// Optional; sent only to a server that names FeatureBandwidth.
	Bandwidth int64 `json:"bandwidth,omitempty"`
	// UDPIdleTimeout is how long, in milliseconds, a flow of a UDP
	// mapping lives without a datagram in either direction; 0 (omitted):
	// the server's default, 60 s. At most MaxUDPIdleTimeout; only with
	// Protocol "udp".
	UDPIdleTimeout int64 `json:"udp_idle_timeout_ms,omitempty"`
}

// RegisterResp answers Register (server to client). RemotePort is the port
// actually bound, which differs from the request when it asked for 0.
type RegisterResp struct {
	Status     string `json:"status"`
	Code       Code   `json:"code,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Name       string `json:"name"`
	RemotePort int    `json:"remote_port"`
	// PublicHost is the public host name of the server that holds the
	// port, from a server in a fleet ([cluster]): this one on ok, the
	// holder on a 1004 because another server holds it. Omitted by a
	// server alone; a client then names the host it dialled.
	PublicHost string `json:"public_host,omitempty"`
}

// Ping is the client's heartbeat; Time is unix milliseconds.
type Ping struct {
	Time int64 `json:"time"`
	// RTT is the client's last measured heartbeat round trip, in
	// microseconds; 0 (omitted) before the first pong.
	RTT int64 `json:"rtt_us,omitempty"`
}

// Pong answers Ping (server to client), echoing its Time.
type Pong struct {
	Time int64 `json:"time"`
}

// OfflinePort reports that a mapping's local service stopped answering.
type OfflinePort struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	// Draining says why: the client is stopping, not its local service.
	// The server treats both alike (new visitors are reset at once; live
	// ones go on) and logs them differently. Optional.
	Draining bool `json:"draining,omitempty"`
}

// Unregister removes a mapping registered in this session (client to
// server, after a reload): the server frees its port at once and lets its
// live visitors finish. Only sent to a server that names
// FeatureUnregister.
type Unregister struct {
	Name string `json:"name"`
}

// OnlinePort reports that an offline mapping's local service is back.
type OnlinePort struct {
	Name string `json:"name"`
	Port int    `json:"port"`
}

// ErrorMsg is sent by the server right before it closes a session.
type ErrorMsg struct {
	Code   Code   `json:"code"`
	Reason string `json:"reason"`
}

// OpenDataChannel is the first frame of every data stream (server to client).
type OpenDataChannel struct {
	Name       string `json:"name"`
	RemotePort int    `json:"remote_port"`
	Visitor    string `json:"visitor"` // the visitor's ip:port
	// Public is the server's ip:port that the visitor connected to (the
	// local address of its connection), for a PROXY protocol header
	// towards the local service. Optional: an older server leaves it out.
	Public string `json:"public,omitempty"`
	// Protocol is the mapping's protocol: "udp" for a flow of a UDP
	// mapping, whose datagrams follow the ack framed as protocol.md 7.8
	// says. Omitted: "tcp".
	Protocol string `json:"protocol,omitempty"`
}

// DataChannelAck answers OpenDataChannel on the data stream (client to server).
type DataChannelAck struct {
	Status string `json:"status"`
	Code   Code   `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// DataChannelReset aborts a data stream, in either direction: the sender
// has reset its end (visitor or local connection) and will discard what
// still arrives on the stream; the receiver resets its end too and closes
// the stream. Stream is the yamux stream ID, the same on both sides.
// yamux v0.1.2 cannot reset a stream itself.
type DataChannelReset struct {
	Stream uint32 `json:"stream"`
}

// Type implements Message.
func (*Login) Type() string { return "login" }

// Type implements Message.
func (*LoginResp) Type() string { return "login_resp" }

// Type implements Message.
func (*Register) Type() string { return "register" }

// Type implements Message.
func (*RegisterResp) Type() string { return "register_resp" }

// Type implements Message.
func (*Ping) Type() string { return "ping" }

// Type implements Message.
func (*Pong) Type() string { return "pong" }

// Type implements Message.
func (*OfflinePort) Type() string { return "offline_port" }

// Type implements Message.
func (*OnlinePort) Type() string { return "online_port" }

// Type implements Message.
func (*Unregister) Type() string { return "unregister" }

// Type implements Message.
func (*ErrorMsg) Type() string { return "error" }

// Type implements Message.
func (*OpenDataChannel) Type() string { return "open_data_channel" }

// Type implements Message.
func (*DataChannelAck) Type() string { return "data_channel_ack" }

// Type implements Message.
func (*DataChannelReset) Type() string { return "data_channel_reset" }

// catalog maps a wire type to a constructor of its empty message. The
// wire types are the messages' own Type, written once.
var catalog = index(
	func() Message { return new(Login) },
	func() Message { return new(LoginResp) },
	func() Message { return new(Register) },
	func() Message { return new(RegisterResp) },
	func() Message { return new(Ping) },
	func() Message { return new(Pong) },
	func() Message { return new(OfflinePort) },
	func() Message { return new(OnlinePort) },
	func() Message { return new(Unregister) },
	func() Message { return new(ErrorMsg) },
	func() Message { return new(OpenDataChannel) },
	func() Message { return new(DataChannelAck) },
	func() Message { return new(DataChannelReset) },
)

// index keys each constructor by its message's Type.
func index(mks ...func() Message) map[string]func() Message {
	c := make(map[string]func() Message, len(mks))
	for _, mk := range mks {
		t := mk().Type()
		if _, dup := c[t]; dup {
			panic("control: two messages of type " + t)
		}
		c[t] = mk
	}
	return c
}

// Limits on string fields, so that one frame cannot smuggle unbounded text
// into logs and maps.
const (
	maxTokenLen  = 4096
	maxReasonLen = 1024
	maxAddrLen   = 256
)

// ValidName reports whether s is acceptable as a client or mapping name:
// 1 to 64 of A-Z a-z 0-9 . _ -.
func ValidName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
}

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

func checkName(field, s string) error {
	if !ValidName(s) {
		return fmt.Errorf("%s: want 1-64 of [A-Za-z0-9._-], got %d bytes", field, len(s))
	}
	return nil
}

func checkPort(field string, p int, zeroOK bool) error {
	if p < 0 || p > 65535 || (p == 0 && !zeroOK) {
		return fmt.Errorf("%s: %d out of range", field, p)
	}
	return nil
}

func checkLen(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s: %d bytes, at most %d", field, len(s), max)
	}
	return nil
}

func checkStatus(s string, code Code) error {
	switch {
	case s == StatusOK:
		return nil
	case s == StatusFail && code != 0:
		return nil
	case s == StatusFail:
		return fmt.Errorf("status fail without a code")
	}
	return fmt.Errorf("status: want %q or %q", StatusOK, StatusFail)
}

func (m *Login) validate() error {
	if m.Version < 1 {
		return fmt.Errorf("version: %d", m.Version)
	}
	if err := checkLen("token", m.Token, maxTokenLen); err != nil {
		return err
	}
	if err := checkLen("client_id", m.ClientID, 64); err != nil {
		return err
	}
	return checkName("name", m.Name)
}

func (m *LoginResp) validate() error {
	if err := checkLen("reason", m.Reason, maxReasonLen); err != nil {
		return err
	}
	if len(m.Features) > maxFeatures {
		return fmt.Errorf("features: %d, at most %d", len(m.Features), maxFeatures)
	}
	for _, f := range m.Features {
		if err := checkName("features", f); err != nil {
			return err
		}
	}
	return checkStatus(m.Status, m.Code)
}

func (m *Unregister) validate() error { return checkName("name", m.Name) }

func (m *Register) validate() error {
	switch {
	case m.Protocol != ProtocolTCP && m.Protocol != ProtocolUDP:
		return fmt.Errorf("protocol: want %q or %q", ProtocolTCP, ProtocolUDP)
	case m.UDPIdleTimeout < 0 || m.UDPIdleTimeout > MaxUDPIdleTimeout:
		return fmt.Errorf("udp_idle_timeout_ms: %d, want 0 to %d", m.UDPIdleTimeout, MaxUDPIdleTimeout)
	case m.UDPIdleTimeout != 0 && m.Protocol != ProtocolUDP:
		return fmt.Errorf("udp_idle_timeout_ms: only for protocol %q", ProtocolUDP)
	}
	if err := checkLen("local_addr", m.LocalAddr, maxAddrLen); err != nil {
		return err
	}
	if err := checkPort("remote_port", m.RemotePort, true); err != nil {
		return err
	}
	if err := checkPort("prefer_port", m.PreferPort, true); err != nil {
		return err
	}
	if err := checkPrefixList("allow_ips", m.AllowIPs); err != nil {
		return err
	}
	if err := checkPrefixList("deny_ips", m.DenyIPs); err != nil {
		return err
	}
	if m.Bandwidth < 0 || (m.Bandwidth > 0 && m.Bandwidth < MinBandwidth) {
		return fmt.Errorf("bandwidth: %d, want 0 or at least %d", m.Bandwidth, MinBandwidth)
	}
	return checkName("name", m.Name)
}

func (m *RegisterResp) validate() error {
	if err := checkLen("reason", m.Reason, maxReasonLen); err != nil {
		return err
	}
	if err := checkLen("public_host", m.PublicHost, maxAddrLen); err != nil {
		return err
	}
	if err := checkPort("remote_port", m.RemotePort, true); err != nil {
		return err
	}
	if err := checkName("name", m.Name); err != nil {
		return err
	}
	return checkStatus(m.Status, m.Code)
}

func (*Ping) validate() error { return nil }

func (*Pong) validate() error { return nil }

func (m *OfflinePort) validate() error {
	if err := checkPort("port", m.Port, false); err != nil {
		return err
	}
	return checkName("name", m.Name)
}

func (m *OnlinePort) validate() error {
	if err := checkPort("port", m.Port, false); err != nil {
		return err
	}
	return checkName("name", m.Name)
}

func (m *ErrorMsg) validate() error {
	return checkLen("reason", m.Reason, maxReasonLen)
}

func (m *OpenDataChannel) validate() error {
	if m.Protocol != "" && m.Protocol != ProtocolTCP && m.Protocol != ProtocolUDP {
		return fmt.Errorf("protocol: want %q, %q or none", ProtocolTCP, ProtocolUDP)
	}
	if err := checkLen("visitor", m.Visitor, maxAddrLen); err != nil {
		return err
	}
	if err := checkLen("public", m.Public, maxAddrLen); err != nil {
		return err
	}
	if err := checkPort("remote_port", m.RemotePort, false); err != nil {
		return err
	}
	return checkName("name", m.Name)
}

func (m *DataChannelAck) validate() error {
	if err := checkLen("reason", m.Reason, maxReasonLen); err != nil {
		return err
	}
	return checkStatus(m.Status, m.Code)
}

func (m *DataChannelReset) validate() error {
	if m.Stream == 0 {
		return fmt.Errorf("stream: 0 is not a stream")
	}
	return nil
}

// NewID returns a random id for login.client_id and
// login_resp.session_id: 16 hex digits.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
