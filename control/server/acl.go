package server

import (
	"net"
	"net/netip"
)

// ipLists are one level's visitor lists: the server's (Options.AllowIPs,
// DenyIPs) or a mapping's (register.allow_ips, deny_ips).
type ipLists struct{ allow, deny []netip.Prefix }

// empty reports whether the lists let every visitor in.
func (l ipLists) empty() bool { return len(l.allow) == 0 && len(l.deny) == 0 }

// admits reports whether a passes this level: in no deny prefix, and in
// an allow prefix unless there is none. a is unmapped.
func (l ipLists) admits(a netip.Addr) bool {
	for _, p := range l.deny {
		if p.Contains(a) {
			return false
		}
	}
	if len(l.allow) == 0 {
		return true
	}
	for _, p := range l.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// visitorAdmitted is the visitor rule of docs/security.md: a visitor is let in
// when it passes the server's lists and the mapping's. Deny beats allow
// at each level, and a mapping's allow list cannot let in a visitor the
// server denies (or does not allow): the levels are ANDed. An
// IPv4-mapped IPv6 address (::ffff:203.0.113.7, a dual-stack listener's
// view of an IPv4 visitor) is matched as the IPv4 address it carries.
// A visitor whose address cannot be read is let in only when no list is
// set.
func visitorAdmitted(srv, m ipLists, visitor net.Addr) bool {
	if srv.empty() && m.empty() {
		return true
	}
	a, ok := visitorIP(visitor)
	return ok && srv.admits(a) && m.admits(a)
}

// visitorIP is the unmapped IP of a visitor's address.
func visitorIP(visitor net.Addr) (netip.Addr, bool) {
	if ta, ok := visitor.(*net.TCPAddr); ok {
		a, ok := netip.AddrFromSlice(ta.IP)
		return a.Unmap(), ok
	}
	if visitor == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(visitor.String())
	return ap.Addr().Unmap(), err == nil
}
