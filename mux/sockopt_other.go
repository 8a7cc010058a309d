//go:build !linux && !darwin

package mux

import "net"

// setNotSentLowat is a no-op where TCP_NOTSENT_LOWAT does not exist.
func setNotSentLowat(net.Conn, int) {}
