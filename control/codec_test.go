package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// wireCases pins the exact bytes of every message of protocol version 1.
// Changing one is a wire change: docs/protocol.md changes with it.
var wireCases = []struct {
	name string
	msg  Message
	json string
}{
	{"login", &Login{Version: 1, Token: "s3cret", Name: "laptop", ClientID: "c0ffee"},
		`{"type":"login","version":1,"token":"s3cret","name":"laptop","client_id":"c0ffee"}`},
	{"login_resp ok", &LoginResp{Status: "ok", SessionID: "0123456789abcdef"},
		`{"type":"login_resp","status":"ok","session_id":"0123456789abcdef"}`},
	{"login_resp fail", &LoginResp{Status: "fail", Code: 1002, Reason: "bad token"},
		`{"type":"login_resp","status":"fail","code":1002,"reason":"bad token"}`},
	{"register", &Register{Name: "ssh", Protocol: "tcp", RemotePort: 10022, LocalAddr: "127.0.0.1:22", Online: true},
		`{"type":"register","name":"ssh","protocol":"tcp","remote_port":10022,"local_addr":"127.0.0.1:22","online":true}`},
	{"register prefer_port", &Register{Name: "web", Protocol: "tcp", RemotePort: 0, LocalAddr: "127.0.0.1:8080", Online: true, PreferPort: 23462},
		`{"type":"register","name":"web","protocol":"tcp","remote_port":0,"local_addr":"127.0.0.1:8080","online":true,"prefer_port":23462}`},
	{"register with visitor lists", &Register{Name: "ssh", Protocol: "tcp", RemotePort: 10022, LocalAddr: "127.0.0.1:22", Online: true,
		AllowIPs: []string{"203.0.113.0/24", "2001:db8::/32"}, DenyIPs: []string{"203.0.113.66/32"}},
		`{"type":"register","name":"ssh","protocol":"tcp","remote_port":10022,"local_addr":"127.0.0.1:22","online":true,"allow_ips":["203.0.113.0/24","2001:db8::/32"],"deny_ips":["203.0.113.66/32"]}`},
	{"register with bandwidth", &Register{Name: "web", Protocol: "tcp", RemotePort: 18080, LocalAddr: "127.0.0.1:8080", Online: true, Bandwidth: 10 << 20},
		`{"type":"register","name":"web","protocol":"tcp","remote_port":18080,"local_addr":"127.0.0.1:8080","online":true,"bandwidth":10485760}`},
	{"register udp", &Register{Name: "dns", Protocol: "udp", RemotePort: 5353, LocalAddr: "127.0.0.1:53", Online: true, UDPIdleTimeout: 30000},
		`{"type":"register","name":"dns","protocol":"udp","remote_port":5353,"local_addr":"127.0.0.1:53","online":true,"udp_idle_timeout_ms":30000}`},
	{"open_data_channel udp", &OpenDataChannel{Name: "dns", RemotePort: 5353, Visitor: "203.0.113.7:40000", Public: "198.51.100.1:5353", Protocol: "udp"},
		`{"type":"open_data_channel","name":"dns","remote_port":5353,"visitor":"203.0.113.7:40000","public":"198.51.100.1:5353","protocol":"udp"}`},
	{"login_resp with udp", &LoginResp{Status: StatusOK, SessionID: "0123456789abcdef", Features: []string{FeatureUnregister, FeatureVisitorACL, FeatureBandwidth, FeatureUDP}},
		`{"type":"login_resp","status":"ok","session_id":"0123456789abcdef","features":["unregister","visitor_acl","bandwidth","udp"]}`},
	{"login_resp with bandwidth", &LoginResp{Status: StatusOK, SessionID: "0123456789abcdef", Features: []string{FeatureUnregister, FeatureVisitorACL, FeatureBandwidth}},
		`{"type":"login_resp","status":"ok","session_id":"0123456789abcdef","features":["unregister","visitor_acl","bandwidth"]}`},
	{"login_resp with visitor_acl", &LoginResp{Status: StatusOK, SessionID: "0123456789abcdef", Features: []string{FeatureUnregister, FeatureVisitorACL}},
		`{"type":"login_resp","status":"ok","session_id":"0123456789abcdef","features":["unregister","visitor_acl"]}`},
	{"register_resp ok", &RegisterResp{Status: "ok", Name: "web", RemotePort: 18080},
		`{"type":"register_resp","status":"ok","name":"web","remote_port":18080}`},
	{"register_resp fail", &RegisterResp{Status: "fail", Code: 1003, Reason: "port 80 is outside allow_ports", Name: "web", RemotePort: 80},
		`{"type":"register_resp","status":"fail","code":1003,"reason":"port 80 is outside allow_ports","name":"web","remote_port":80}`},
	{"register_resp ok in a fleet", &RegisterResp{Status: "ok", Name: "web", RemotePort: 18080, PublicHost: "tunnel-b.example.com"},
		`{"type":"register_resp","status":"ok","name":"web","remote_port":18080,"public_host":"tunnel-b.example.com"}`},
	{"register_resp held by another server", &RegisterResp{Status: "fail", Code: 1004, Reason: "port 18080 is held by server tunnel-a (tunnel-a.example.com)", Name: "web", RemotePort: 18080, PublicHost: "tunnel-a.example.com"},
		`{"type":"register_resp","status":"fail","code":1004,"reason":"port 18080 is held by server tunnel-a (tunnel-a.example.com)","name":"web","remote_port":18080,"public_host":"tunnel-a.example.com"}`},
	{"register_resp registry down", &RegisterResp{Status: "fail", Code: 1014, Reason: "the fleet's registry (etcd) is unreachable", Name: "web", RemotePort: 18080},
		`{"type":"register_resp","status":"fail","code":1014,"reason":"the fleet's registry (etcd) is unreachable","name":"web","remote_port":18080}`},
	{"login_resp registry down", &LoginResp{Status: "fail", Code: 1014, Reason: "the fleet's registry (etcd) is unreachable"},
		`{"type":"login_resp","status":"fail","code":1014,"reason":"the fleet's registry (etcd) is unreachable"}`},
	{"ping", &Ping{Time: 1764165600000}, `{"type":"ping","time":1764165600000}`},
	{"login_resp with features", &LoginResp{Status: StatusOK, SessionID: "0123456789abcdef", Features: []string{FeatureUnregister}},
		`{"type":"login_resp","status":"ok","session_id":"0123456789abcdef","features":["unregister"]}`},
	{"unregister", &Unregister{Name: "web"}, `{"type":"unregister","name":"web"}`},
	{"ping with rtt", &Ping{Time: 1764165610000, RTT: 1250}, `{"type":"ping","time":1764165610000,"rtt_us":1250}`},
	{"pong", &Pong{Time: 1764165600000}, `{"type":"pong","time":1764165600000}`},
	{"offline_port", &OfflinePort{Name: "ssh", Port: 10022}, `{"type":"offline_port","name":"ssh","port":10022}`},
	{"offline_port draining", &OfflinePort{Name: "ssh", Port: 10022, Draining: true}, `{"type":"offline_port","name":"ssh","port":10022,"draining":true}`},
	{"online_port", &OnlinePort{Name: "ssh", Port: 10022}, `{"type":"online_port","name":"ssh","port":10022}`},
	{"error", &ErrorMsg{Code: 1007, Reason: "frame too large or malformed"},
		`{"type":"error","code":1007,"reason":"frame too large or malformed"}`},
	{"open_data_channel", &OpenDataChannel{Name: "web", RemotePort: 18080, Visitor: "203.0.113.7:51234"},
		`{"type":"open_data_channel","name":"web","remote_port":18080,"visitor":"203.0.113.7:51234"}`},
	{"open_data_channel public", &OpenDataChannel{Name: "web", RemotePort: 18080, Visitor: "203.0.113.7:51234", Public: "198.51.100.1:18080"},
		`{"type":"open_data_channel","name":"web","remote_port":18080,"visitor":"203.0.113.7:51234","public":"198.51.100.1:18080"}`},
	{"data_channel_ack ok", &DataChannelAck{Status: "ok"}, `{"type":"data_channel_ack","status":"ok"}`},
	{"data_channel_ack fail", &DataChannelAck{Status: "fail", Code: 2001, Reason: "local service unreachable"},
		`{"type":"data_channel_ack","status":"fail","code":2001,"reason":"local service unreachable"}`},
	{"data_channel_reset", &DataChannelReset{Stream: 42}, `{"type":"data_channel_reset","stream":42}`},
}

func frame(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func TestWireFormatPinned(t *testing.T) {
	for _, tc := range wireCases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteFrame(&buf, tc.msg); err != nil {
				t.Fatal(err)
			}
			if want := frame(tc.json); !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("WriteFrame(%T) =\n%q\nwant\n%q", tc.msg, buf.Bytes(), want)
			}
			got, err := ReadFrame(&buf)
			if err != nil {
				t.Fatalf("ReadFrame(%q) = %v", tc.json, err)
			}
			if !equalMsg(got, tc.msg) {
				t.Errorf("ReadFrame(%q) = %+v, want %+v", tc.json, got, tc.msg)
			}
			if buf.Len() != 0 {
				t.Errorf("ReadFrame left %d bytes", buf.Len())
			}
		})
	}
}

func equalMsg(a, b Message) bool {
	x, _ := AppendFrame(nil, a)
	y, _ := AppendFrame(nil, b)
	return a.Type() == b.Type() && bytes.Equal(x, y)
}

func TestEveryTypeIsPinned(t *testing.T) {
	pinned := map[string]bool{}
	for _, tc := range wireCases {
		pinned[tc.msg.Type()] = true
	}
	for typ := range catalog {
		if !pinned[typ] {
			t.Errorf("message type %q has no pinned wire case", typ)
		}
		if got := catalog[typ]().Type(); got != typ {
			t.Errorf("catalog[%q]().Type() = %q", typ, got)
		}
	}
	if len(catalog) != len(pinned) {
		t.Errorf("the catalog has %d types, the pinned cases %d", len(catalog), len(pinned))
	}
}

func TestNewID(t *testing.T) {
	a, b := NewID(), NewID()
	if len(a) != 16 || a == b || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("NewID() = %q, then %q; want two different 16-digit hex ids", a, b)
	}
}

func TestCatalogRefusesTwoOfAType(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("index took two constructors of the same type")
		}
	}()
	index(func() Message { return new(Ping) }, func() Message { return new(Ping) })
}

func TestCodeValues(t *testing.T) {
	want := map[Code]int{
		CodeCannotReachServer: 1001, CodeBadToken: 1002, CodePortNotAllowed: 1003, CodePortInUse: 1004,
		CodeTooManyMappings: 1005, CodeUnsupportedVersion: 1006, CodeMalformed: 1007, CodeLoginTimeout: 1008,
		CodeDuplicateName: 1009, CodeTLS: 1010, CodeProxyRefused: 1011, CodeShuttingDown: 1012,
		CodeFeatureMissing: 1013, CodeRegistryDown: 1014,
		CodeLocalUnreachable: 2001, CodeMappingOffline: 2002,
	}
	if len(want) != len(codeNames) {
		t.Errorf("%d codes named, %d pinned", len(codeNames), len(want))
	}
	for c, v := range want {
		if int(c) != v {
			t.Errorf("code %s = %d, want %d", c, int(c), v)
		}
		if codeNames[c] == "" {
			t.Errorf("code %d has no name", v)
		}
	}
	if got := Code(4242).String(); got != "code 4242" {
		t.Errorf("Code(4242).String() = %q", got)
	}
	for c, fatal := range map[Code]bool{CodeBadToken: true, CodeUnsupportedVersion: true, CodePortInUse: false, CodeTLS: false, CodeShuttingDown: false} {
		if c.Fatal() != fatal {
			t.Errorf("%d.Fatal() = %v, want %v", int(c), !fatal, fatal)
		}
	}
}

func TestReadFrameRejects(t *testing.T) {
	big := frame(`{"type":"ping","time":1,"pad":"` + strings.Repeat("x", MaxFrameSize) + `"}`)
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"zero length", []byte{0, 0, 0, 0}, ErrFrameSize},
		{"one over the limit", binary.BigEndian.AppendUint32(nil, MaxFrameSize+1), ErrFrameSize},
		{"2 GiB prefix", []byte{0x80, 0, 0, 0}, ErrFrameSize},
		{"4 GiB prefix", []byte{0xff, 0xff, 0xff, 0xff}, ErrFrameSize},
		{"oversized body", big, ErrFrameSize},
		{"not json", frame("hello"), ErrMalformed},
		{"json array", frame(`[1,2]`), ErrMalformed},
		{"json null", frame(`null`), ErrMalformed},
		{"no type", frame(`{"version":1}`), ErrMalformed},
		{"type not a string", frame(`{"type":7}`), ErrMalformed},
		{"unknown type", frame(`{"type":"launch_missiles"}`), ErrMalformed},
		{"trailing garbage", frame(`{"type":"ping","time":1} x`), ErrMalformed},
		{"wrong field type", frame(`{"type":"ping","time":"soon"}`), ErrMalformed},
		{"prefer_port out of range", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":0,"local_addr":"x","prefer_port":70000}`), ErrMalformed},
		{"port out of range", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":70000,"local_addr":"x"}`), ErrMalformed},
		{"negative port", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":-1,"local_addr":"x"}`), ErrMalformed},
		{"too many allow_ips", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":1,"local_addr":"x","allow_ips":[` +
			strings.TrimSuffix(strings.Repeat(`"10.0.0.0/8",`, MaxPrefixes+1), ",") + `]}`), ErrMalformed},
		{"long deny_ips entry", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":1,"local_addr":"x","deny_ips":["` + strings.Repeat("1", 65) + `"]}`), ErrMalformed},
		{"deny_ips not strings", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":1,"local_addr":"x","deny_ips":[7]}`), ErrMalformed},
		{"negative bandwidth", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":1,"local_addr":"x","bandwidth":-1}`), ErrMalformed},
		{"bandwidth below the minimum", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":1,"local_addr":"x","bandwidth":1023}`), ErrMalformed},
		{"bandwidth not a number", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":1,"local_addr":"x","bandwidth":"1MiB"}`), ErrMalformed},
		{"sctp", frame(`{"type":"register","name":"a","protocol":"sctp","remote_port":1,"local_addr":"x"}`), ErrMalformed},
		{"udp idle timeout on tcp", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":1,"local_addr":"x","udp_idle_timeout_ms":1000}`), ErrMalformed},
		{"udp idle timeout above a day", frame(`{"type":"register","name":"a","protocol":"udp","remote_port":1,"local_addr":"x","udp_idle_timeout_ms":86400001}`), ErrMalformed},
		{"open_data_channel protocol", frame(`{"type":"open_data_channel","name":"a","remote_port":1,"visitor":"1.2.3.4:5","protocol":"sctp"}`), ErrMalformed},
		{"bad mapping name", frame(`{"type":"register","name":"a b","protocol":"tcp","remote_port":1,"local_addr":"x"}`), ErrMalformed},
		{"empty client name", frame(`{"type":"login","version":1,"token":"t","name":""}`), ErrMalformed},
		{"version 0", frame(`{"type":"login","version":0,"token":"t","name":"n"}`), ErrMalformed},
		{"huge token", frame(`{"type":"login","version":1,"name":"n","token":"` + strings.Repeat("t", 5000) + `"}`), ErrMalformed},
		{"fail without code", frame(`{"type":"login_resp","status":"fail"}`), ErrMalformed},
		{"bad status", frame(`{"type":"data_channel_ack","status":"maybe"}`), ErrMalformed},
		{"offline port 0", frame(`{"type":"offline_port","name":"a","port":0}`), ErrMalformed},
		{"online bad name", frame(`{"type":"online_port","name":"","port":5}`), ErrMalformed},
		{"reset stream 0", frame(`{"type":"data_channel_reset","stream":0}`), ErrMalformed},
		{"reset stream negative", frame(`{"type":"data_channel_reset","stream":-1}`), ErrMalformed},
		{"header port 0", frame(`{"type":"open_data_channel","name":"a","remote_port":0,"visitor":"v"}`), ErrMalformed},
		{"long reason", frame(`{"type":"error","code":1,"reason":"` + strings.Repeat("r", 2000) + `"}`), ErrMalformed},
		{"resp bad name", frame(`{"type":"register_resp","status":"ok","name":"","remote_port":1}`), ErrMalformed},
		{"long client_id", frame(`{"type":"login","version":1,"token":"t","name":"n","client_id":"` + strings.Repeat("c", 65) + `"}`), ErrMalformed},
		{"login_resp long reason", frame(`{"type":"login_resp","status":"fail","code":1002,"reason":"` + strings.Repeat("r", 2000) + `"}`), ErrMalformed},
		{"long local_addr", frame(`{"type":"register","name":"a","protocol":"tcp","remote_port":1,"local_addr":"` + strings.Repeat("x", 300) + `"}`), ErrMalformed},
		{"register_resp long reason", frame(`{"type":"register_resp","status":"fail","code":1004,"name":"a","reason":"` + strings.Repeat("r", 2000) + `"}`), ErrMalformed},
		{"register_resp port out of range", frame(`{"type":"register_resp","status":"ok","name":"a","remote_port":70000}`), ErrMalformed},
		{"register_resp long public_host", frame(`{"type":"register_resp","status":"ok","name":"a","remote_port":1,"public_host":"` + strings.Repeat("h", 300) + `"}`), ErrMalformed},
		{"register_resp public_host not a string", frame(`{"type":"register_resp","status":"ok","name":"a","remote_port":1,"public_host":7}`), ErrMalformed},
		{"register_resp bad status", frame(`{"type":"register_resp","status":"maybe","name":"a","remote_port":1}`), ErrMalformed},
		{"offline bad name", frame(`{"type":"offline_port","name":"a b","port":5}`), ErrMalformed},
		{"online port 0", frame(`{"type":"online_port","name":"a","port":0}`), ErrMalformed},
		{"long visitor", frame(`{"type":"open_data_channel","name":"a","remote_port":1,"visitor":"` + strings.Repeat("v", 300) + `"}`), ErrMalformed},
		{"long public", frame(`{"type":"open_data_channel","name":"a","remote_port":1,"visitor":"v","public":"` + strings.Repeat("p", 300) + `"}`), ErrMalformed},
		{"public not a string", frame(`{"type":"open_data_channel","name":"a","remote_port":1,"visitor":"v","public":1}`), ErrMalformed},
		{"header bad name", frame(`{"type":"open_data_channel","name":"","remote_port":1,"visitor":"v"}`), ErrMalformed},
		{"ack long reason", frame(`{"type":"data_channel_ack","status":"fail","code":2001,"reason":"` + strings.Repeat("r", 2000) + `"}`), ErrMalformed},
		{"short header", []byte{0, 0}, io.ErrUnexpectedEOF},
		{"header without a body", binary.BigEndian.AppendUint32(nil, 10), io.ErrUnexpectedEOF},
		{"short body", frame(`{"type":"ping"}`)[:10], io.ErrUnexpectedEOF},
		{"empty", nil, io.EOF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ReadFrame(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.want) {
				t.Errorf("ReadFrame(%.40q) = %v, %v; want %v", tc.in, m, err, tc.want)
			}
			if tc.want != io.EOF && tc.want != io.ErrUnexpectedEOF && CodeOf(err) != CodeMalformed {
				t.Errorf("CodeOf(%v) = %d, want 1007", err, CodeOf(err))
			}
		})
	}
}

// TestReadFrameDoesNotAllocateBeforeCheck: a 2 GiB prefix is refused
// without reading or allocating the body (a reader that fails on any read
// past the header proves nothing was read).
func TestReadFrameDoesNotAllocateBeforeCheck(t *testing.T) {
	prefix := func() io.Reader {
		return io.MultiReader(bytes.NewReader([]byte{0x7f, 0xff, 0xff, 0xff}), failReader{})
	}
	allocs := testing.AllocsPerRun(10, func() { _, _ = ReadFrame(prefix()) })
	if _, err := ReadFrame(prefix()); !errors.Is(err, ErrFrameSize) {
		t.Errorf("ReadFrame(2 GiB prefix) = %v, want ErrFrameSize", err)
	}
	if allocs > 10 {
		t.Errorf("ReadFrame(2 GiB prefix) made %.0f allocations", allocs)
	}
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("read past the header") }

// TestReadFrameLeavesPayload: a data stream's first bytes follow its header
// at once; ReadFrame must not consume them.
func TestReadFrameLeavesPayload(t *testing.T) {
	b := frame(`{"type":"open_data_channel","name":"w","remote_port":1,"visitor":"v"}`)
	b = append(b, "GET / HTTP/1.1\r\n"...)
	r := bytes.NewReader(b)
	if _, err := ReadFrame(r); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "GET / HTTP/1.1\r\n" {
		t.Errorf("after ReadFrame, payload = %q", rest)
	}
}

func TestUnknownFieldsIgnored(t *testing.T) {
	m, err := Decode([]byte(`{"type":"ping","time":5,"future":"field"}`))
	if err != nil || m.(*Ping).Time != 5 {
		t.Errorf("Decode with an unknown field = %+v, %v; want ping 5", m, err)
	}
}

func TestAppendFrameTooLarge(t *testing.T) {
	_, err := AppendFrame(nil, &ErrorMsg{Code: 1, Reason: strings.Repeat("x", MaxFrameSize)})
	if !errors.Is(err, ErrFrameSize) {
		t.Errorf("AppendFrame(oversized) = %v, want ErrFrameSize", err)
	}
}

func TestWriteFrameError(t *testing.T) {
	if err := WriteFrame(failWriter{}, &Ping{}); err == nil {
		t.Error("WriteFrame to a failing writer = nil")
	}
	if err := WriteFrame(io.Discard, &ErrorMsg{Reason: strings.Repeat("x", MaxFrameSize)}); !errors.Is(err, ErrFrameSize) {
		t.Errorf("WriteFrame(oversized) = %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestRejectError(t *testing.T) {
	cases := []struct {
		err  *RejectError
		want string
	}{
		{&RejectError{Code: 1002, Reason: "bad token"}, "refused: 1002 bad token"},
		{&RejectError{Code: 1003}, "refused: 1003 port not allowed"},
		{&RejectError{Code: 1004, Reason: "port 22 is in use"}, "refused: 1004 port in use: port 22 is in use"},
	}
	for _, tc := range cases {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if CodeOf(tc.err) != tc.err.Code {
			t.Errorf("CodeOf(%v) = %d", tc.err, CodeOf(tc.err))
		}
	}
	if CodeOf(io.EOF) != 0 {
		t.Error("CodeOf(io.EOF) != 0")
	}
}

func FuzzReadFrame(f *testing.F) {
	for _, tc := range wireCases {
		f.Add(frame(tc.json))
	}
	f.Add([]byte{0x80, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ReadFrame(bytes.NewReader(in))
		if err != nil {
			return
		}
		// Whatever decodes must encode again and decode to the same.
		out, err := AppendFrame(nil, m)
		if err != nil {
			t.Fatalf("AppendFrame(%+v) = %v", m, err)
		}
		m2, err := ReadFrame(bytes.NewReader(out))
		if err != nil || !equalMsg(m, m2) {
			t.Fatalf("round trip of %q: %+v, %v", in, m2, err)
		}
	})
}

func FuzzDecode(f *testing.F) {
	for _, tc := range wireCases {
		f.Add([]byte(tc.json))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Decode(body)
		if err == nil && m == nil {
			t.Fatal("Decode = nil, nil")
		}
		if err != nil && CodeOf(err) != CodeMalformed {
			t.Fatalf("Decode(%q) = %v, not a 1007 error", body, err)
		}
	})
}
