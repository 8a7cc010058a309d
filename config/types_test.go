package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDurationText(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"10s", 10 * time.Second, ""},
		{"1m30s", 90 * time.Second, ""},
		{"500ms", 500 * time.Millisecond, ""},
		{"0s", 0, ""},
		{"10", 0, `bad duration "10"`},
		{"ten seconds", 0, `bad duration "ten seconds"`},
		{"", 0, `bad duration ""`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tt.in))
			if !errMatches(err, tt.wantErr) || d.D() != tt.want {
				t.Errorf("UnmarshalText(%q) = %v, %v; want %v, %q", tt.in, d, err, tt.want, tt.wantErr)
			}
		})
	}
	d := Duration(90 * time.Second)
	if b, _ := d.MarshalText(); string(b) != "1m30s" || d.String() != "1m30s" {
		t.Errorf("Duration(90s).MarshalText() = %q, want %q", b, "1m30s")
	}
}

func TestSizeText(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr string
	}{
		{"0", 0, ""},
		{"4096", 4096, ""},
		{"512B", 512, ""},
		{"512KB", 512_000, ""},
		{"3MB", 3_000_000, ""},
		{"2GB", 2_000_000_000, ""},
		{"256KiB", 256 << 10, ""},
		{"4MiB", 4 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"4 MiB", 4 << 20, ""},
		{" 4MiB ", 4 << 20, ""},
		{"", 0, "want a whole number of bytes"},
		{"MiB", 0, "want a whole number of bytes"},
		{"-1MiB", 0, "want a whole number of bytes"},
		{"1.5MiB", 0, `unknown unit ".5MiB"`},
		{"4mib", 0, `unknown unit "mib"`},
		{"4TB", 0, `unknown unit "TB"`},
		{"99999999999999999999", 0, "too large"},
		{"9000000000GiB", 0, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var s Size
			err := s.UnmarshalText([]byte(tt.in))
			if !errMatches(err, tt.wantErr) || s != tt.want {
				t.Errorf("UnmarshalText(%q) = %d, %v; want %d, %q", tt.in, s, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1500, "1500B"},
		{1000, "1KB"},
		{1 << 10, "1KiB"},
		{1 << 20, "1MiB"},
		{3 << 30, "3GiB"},
		{5_000_000, "5MB"},
		{2_000_000_000, "2GB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			b, _ := tt.in.MarshalText()
			if tt.in.String() != tt.want || string(b) != tt.want {
				t.Errorf("Size(%d).String() = %q, want %q", int64(tt.in), tt.in.String(), tt.want)
			}
			var back Size
			if err := back.UnmarshalText(b); err != nil || back != tt.in {
				t.Errorf("UnmarshalText(%q) = %d, %v; want %d", b, back, err, tt.in)
			}
		})
	}
}

// TestSizeInFile decodes both forms of a size through the TOML decoder.
func TestSizeInFile(t *testing.T) {
	tests := []struct {
		value string
		want  Size
	}{
		{"1048576", 1 << 20},
		{"1_048_576", 1 << 20},
		{`"1MiB"`, 1 << 20},
		{`'2MiB'`, 2 << 20},
		{`"1000000"`, 1_000_000},
		{`"512KB"`, 512_000},
		{`"8MB"`, 8_000_000},
		{`"64MiB"`, 64 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			doc := "token = 't'\n[mux]\nwindow_size = " + tt.value + "\n"
			s, err := ParseServer("server.toml", []byte(doc), nil)
			if err != nil || s.Mux.WindowSize != tt.want {
				t.Fatalf("ParseServer(%q) = %v, want window %d", doc, err, tt.want)
			}
		})
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in      string
		want    PortRange
		wantErr string
	}{
		{"2222", PortRange{2222, 2222}, ""},
		{"1", PortRange{1, 1}, ""},
		{"65535", PortRange{65535, 65535}, ""},
		{"10000-20000", PortRange{10000, 20000}, ""},
		{"1-65535", PortRange{1, 65535}, ""},
		{"10 - 20", PortRange{10, 20}, ""},
		{"5-5", PortRange{5, 5}, ""},
		{"", PortRange{}, `bad port range "": "" is not a port number`},
		{"0", PortRange{}, "port 0 is out of range 1..65535"},
		{"65536", PortRange{}, "port 65536 is out of range"},
		{"10-x", PortRange{}, `bad port range "10-x": "x" is not a port number`},
		{"x-10", PortRange{}, `"x" is not a port number`},
		{"20-10", PortRange{}, "20 is above 10"},
		{"1-2-3", PortRange{}, `"2-3" is not a port number`},
		{"-5", PortRange{}, `"" is not a port number`},
		{"1-", PortRange{}, `"" is not a port number`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePortRange(tt.in)
			if !errMatches(err, tt.wantErr) || got != tt.want {
				t.Errorf("ParsePortRange(%q) = %v, %v; want %v, %q", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestPortRangeContains(t *testing.T) {
	r := PortRange{10000, 20000}
	tests := []struct {
		port int
		want bool
	}{
		{9999, false}, {10000, true}, {15000, true}, {20000, true}, {20001, false}, {0, false},
	}
	for _, tt := range tests {
		if got := r.Contains(tt.port); got != tt.want {
			t.Errorf("%v.Contains(%d) = %v, want %v", r, tt.port, got, tt.want)
		}
	}
	if got := (PortRange{2222, 2222}).Contains(2222); !got {
		t.Errorf("2222.Contains(2222) = false, want true")
	}
}

func TestPortRangeString(t *testing.T) {
	for _, s := range []string{"2222", "10000-20000", "1-65535"} {
		r, err := ParsePortRange(s)
		b, _ := r.MarshalText()
		if err != nil || r.String() != s || string(b) != s {
			t.Errorf("ParsePortRange(%q).String() = %q, %v; want %q", s, r.String(), err, s)
		}
	}
}

// errMatches reports whether err carries the text want; "" wants no error.
func errMatches(err error, want string) bool {
	if want == "" {
		return err == nil
	}
	return err != nil && strings.Contains(err.Error(), want)
}

func TestTrustedProxyText(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"10.0.0.0/8", "10.0.0.0/8", ""},
		{"10.1.2.3/8", "10.0.0.0/8", ""},
		{"127.0.0.1", "127.0.0.1/32", ""},
		{"::1", "::1/128", ""},
		{"2001:db8::/32", "2001:db8::/32", ""},
		{"0.0.0.0/0", "0.0.0.0/0", ""},
		{"::ffff:192.168.0.0/112", "192.168.0.0/16", ""},
		{"::ffff:10.0.0.1", "10.0.0.1/32", ""},
		{"", "", `bad trusted proxy "": want an IP address or a CIDR`},
		{"localhost", "", `bad trusted proxy "localhost": want an IP address or a CIDR`},
		{" 10.0.0.1", "", "want an IP address or a CIDR"},
		{"10.0.0.0/08", "", `the prefix length "08" is not a number 0..32`},
		{"10.0.0.0/+8", "", `the prefix length "+8" is not a number 0..32`},
		{"10.0.0.0/-1", "", `the prefix length "-1" is not a number 0..32`},
		{"::/129", "", `the prefix length "129" is not a number 0..128`},
		{"10.0.0.0/8/8", "", `the prefix length "8/8" is not a number`},
		{"::ffff:0:0/95", "", "needs a length of 96 or more"},
		{"fe80::1%eth0/64", "", "an IPv6 zone (%name) is not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var p trustedProxy
			err := p.UnmarshalText([]byte(tt.in))
			got := ""
			if err == nil {
				got = netip.Prefix(p).String()
			}
			if !errMatches(err, tt.wantErr) || got != tt.want {
				t.Errorf("UnmarshalText(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
