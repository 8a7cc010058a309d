package control

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParsePrefixes(t *testing.T) {
	cases := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"10.0.0.0/8", "10.0.0.0/8", ""},
		{"10.1.2.3/8", "10.0.0.0/8", ""},
		{"203.0.113.7/32", "203.0.113.7/32", ""},
		{"2001:db8::1/32", "2001:db8::/32", ""},
		{"::ffff:192.168.0.0/112", "192.168.0.0/16", ""},
		{"0.0.0.0/0", "0.0.0.0/0", ""},
		{"10.0.0.1", "", `allow_ips[0]: "10.0.0.1" is not a CIDR`},
		{"example.com/8", "", `allow_ips[0]: "example.com/8" is not a CIDR`},
		{"10.0.0.0/33", "", `allow_ips[0]: "10.0.0.0/33" is not a CIDR`},
		{"fe80::1%eth0/64", "", "is not a CIDR"},
		{"::ffff:0:0/95", "", "needs a length of 96 or more"},
	}
	for _, tc := range cases {
		got, err := ParsePrefixes("allow_ips", []string{tc.in})
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParsePrefixes(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
			}
		case err != nil || len(got) != 1 || got[0].String() != tc.want:
			t.Errorf("ParsePrefixes(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := ParsePrefixes("deny_ips", []string{"10.0.0.0/8", "nope"}); err == nil || !strings.HasPrefix(err.Error(), "deny_ips[1]: ") {
		t.Errorf("ParsePrefixes(deny_ips, [ok, nope]) = %v; want an error naming deny_ips[1]", err)
	}
}

func TestFormatPrefixesRoundTrip(t *testing.T) {
	if got := FormatPrefixes(nil); got != nil {
		t.Errorf("FormatPrefixes(nil) = %q, want nil (the field left out)", got)
	}
	in := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("1.2.3.4/32")}
	out, err := ParsePrefixes("allow_ips", FormatPrefixes(in))
	if err != nil || !slices.Equal(out, in) {
		t.Errorf("ParsePrefixes(FormatPrefixes(%v)) = %v, %v", in, out, err)
	}
}
