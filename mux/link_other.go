//go:build !linux

package mux

import (
	"net"
)

// linkSizer needs Linux's TCP_INFO; elsewhere sizes stay fixed.
type linkSizer struct{}

func newLinkSizer(net.Conn, int, func() int64) *linkSizer { return nil }

func (*linkSizer) frameSize() int { return maxFrame }
func (*linkSizer) sample()        {}
