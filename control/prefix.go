package control

import (
	"fmt"
	"net/netip"
)

// Bounds of Register's visitor lists: a frame holding more is malformed.
// Whether each entry parses is the server's check at registration
// (ParsePrefixes), answered in the mapping's register_resp.
const (
	MaxPrefixes  = 256 // entries in allow_ips and in deny_ips, each
	maxPrefixLen = 64  // bytes of one entry; "ffff:...:ffff/128" is 43
)

func checkPrefixList(field string, ps []string) error {
	if len(ps) > MaxPrefixes {
		return fmt.Errorf("%s: %d entries, at most %d", field, len(ps), MaxPrefixes)
	}
	for i, p := range ps {
		if err := checkLen(fmt.Sprintf("%s[%d]", field, i), p, maxPrefixLen); err != nil {
			return err
		}
	}
	return nil
}

// FormatPrefixes writes ps as Register carries them: CIDR strings. Nil
// for none, so that the field is left out.
func FormatPrefixes(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// ParsePrefixes reads a Register visitor list: each entry a CIDR
// ("10.0.0.0/8", "2001:db8::/32"). Each is masked, and an IPv4-mapped one
// (::ffff:10.0.0.0/104) is taken as IPv4 (10.0.0.0/8), since visitors
// are matched by their unmapped address. The error names field and the
// entry's index.
func ParsePrefixes(field string, ss []string) ([]netip.Prefix, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("%s[%d]: %q is not a CIDR such as \"10.0.0.0/8\"", field, i, s)
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return nil, fmt.Errorf("%s[%d]: %q: an IPv4-mapped prefix needs a length of 96 or more", field, i, s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out[i] = p.Masked()
	}
	return out, nil
}
