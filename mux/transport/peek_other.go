//go:build !linux && !darwin

package transport

import "net"

// peekFirst cannot peek here: the caller reads the first byte and replays
// it.
func peekFirst(net.Conn) (byte, bool, error) { return 0, false, nil }

// peek cannot peek here: the caller reads byte by byte.
func peek(*net.TCPConn, []byte) (int, bool, error) { return 0, false, nil }
