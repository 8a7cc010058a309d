//go:build !linux && !darwin

package dataplane

import "net"

// newTCPWaiter is nil where MSG_PEEK is not at hand: reads then wait
// holding their buffer.
func newTCPWaiter(net.Conn) waiter { return nil }
