package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/pires/go-proxyproto"
)

// A load balancer in front of the server (HAProxy, AWS NLB, ...) can start
// each connection it passes on with a PROXY protocol header naming the
// peer it accepted (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt).
// ReadProxyHeader reads that header off the socket byte-exactly, so that
// the bytes behind it stay on the socket, and go-proxyproto parses what
// was read. go-proxyproto's own Conn reads ahead through a bufio.Reader:
// it would take the visitor's first bytes into a buffer and hide the
// socket that the data plane waits on without a buffer and that mux
// writes to with writev.
//
// The two versions, as read here:
//
//	v1: "PROXY " ... CRLF, 15 ("PROXY UNKNOWN\r\n") to 107 bytes
//	v2: a 12-byte signature, version and command, family, a 16-bit
//	    big-endian length, then that many bytes (addresses and TLVs)
//
// Every header is at least 15 bytes long, so the first 15 are read
// blind; a v1 line is then read up to its LF (the bytes waiting on the
// socket are peeked, and only those up to the LF taken), a v2 header up
// to its length.

// ErrProxyHeader is wrapped by ReadProxyHeader's errors: a connection on
// which a PROXY protocol header was expected did not start with a valid
// one. The wrapping error says why (what it sent instead, how many bytes
// came before it stalled or closed, or what does not parse).
var ErrProxyHeader = errors.New("transport: no valid PROXY protocol header")

// Sizes of a header.
const (
	proxyMinLen   = len("PROXY UNKNOWN\r\n") // the shortest header, of either version
	proxyV1MaxLen = 107                      // the longest v1 line, CRLF included
	proxyV2Fixed  = 16                       // signature, version and command, family, length
)

var proxyV1Prefix = []byte("PROXY ")

// ProxiedConn is a TCP connection that came through a load balancer: its
// RemoteAddr and LocalAddr are the source and destination that the
// balancer's PROXY header named (the visitor or client, and the address
// it connected to), or the socket's own for a header without addresses
// (the LOCAL command of a balancer's health check, v1's UNKNOWN, or a
// family other than TCP over IPv4 or IPv6). Reads and writes go straight
// to the socket: it buffers nothing, and BareTCP gives the socket to
// those that need it (the data plane's wait without a buffer, mux's
// writev, socket options). The socket's own methods (CloseWrite,
// SetLinger, SyscallConn) are promoted.
type ProxiedConn struct {
	*net.TCPConn
	remote, local net.Addr
	owned         bool // the balancer's own connection: LOCAL, or v1's UNKNOWN
}

var _ net.Conn = (*ProxiedConn)(nil)

// RemoteAddr is the source the PROXY header named.
func (c *ProxiedConn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr is the destination the PROXY header named.
func (c *ProxiedConn) LocalAddr() net.Addr { return c.local }

// Local reports whether the header was the LOCAL command (or v1's
// UNKNOWN): a connection the balancer made on its own, such as a health
// check, which carries no peer of its own.
func (c *ProxiedConn) Local() bool { return c.owned }

// Proxy is the load balancer's address: the socket's peer.
func (c *ProxiedConn) Proxy() net.Addr { return c.TCPConn.RemoteAddr() }

// BareTCP is the socket that reading and writing c read and write.
func (c *ProxiedConn) BareTCP() *net.TCPConn { return c.TCPConn }

// bareTCP is the TCP socket that reading c reads: c itself, or the socket
// of a connection that says it buffers nothing (a ProxiedConn); nil for
// any other connection.
func bareTCP(c net.Conn) *net.TCPConn {
	switch c := c.(type) {
	case *net.TCPConn:
		return c
	case interface{ BareTCP() *net.TCPConn }:
		return c.BareTCP()
	}
	return nil
}

// ReadProxyHeader reads a PROXY protocol header, v1 or v2, from the start
// of c, under c's read deadline (the caller sets and clears it), and
// returns c as the header names it. It reads exactly the header's bytes:
// what follows is still on the socket. Any failure (no header, a header
// that does not parse, a v2 header longer than go-proxyproto's
// MaxV2HeaderSize, the deadline, the peer closing mid-header) wraps
// ErrProxyHeader; c is left to the caller to close.
func ReadProxyHeader(c *net.TCPConn) (*ProxiedConn, error) {
	b, err := readProxyHeader(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	br := bufio.NewReaderSize(bytes.NewReader(b), len(b))
	h, err := proxyproto.Read(br)
	if err == nil && br.Buffered() > 0 {
		err = fmt.Errorf("%d bytes after the header's end", br.Buffered()) // readProxyHeader and go-proxyproto disagree
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxyHeader, err)
	}
	pc := &ProxiedConn{TCPConn: c, remote: c.RemoteAddr(), local: c.LocalAddr(), owned: h.Command.IsLocal()}
	if src, dst, ok := h.TCPAddrs(); ok && !h.Command.IsLocal() {
		pc.remote, pc.local = src, dst
	}
	return pc, nil
}

// readProxyHeader reads the bytes of one header from c, and not one more.
func readProxyHeader(c *net.TCPConn) ([]byte, error) {
	b := make([]byte, proxyMinLen, proxyV1MaxLen)
	if n, err := io.ReadFull(c, b); err != nil {
		return nil, fmt.Errorf("%w after %d bytes", err, n)
	}
	switch {
	case bytes.HasPrefix(b, proxyV1Prefix):
		return readV1(c, b)
	case bytes.HasPrefix(b, proxyproto.SIGV2):
		return readV2(c, b)
	}
	return nil, fmt.Errorf("the connection starts with %q, not a PROXY protocol header", b)
}

// readV1 reads the rest of a v1 line whose first bytes are b: what waits
// on the socket is peeked, and only the bytes up to the first LF are
// taken. Where the socket cannot be peeked, it reads a byte at a time.
func readV1(c *net.TCPConn, b []byte) ([]byte, error) {
	for {
		switch i := bytes.IndexByte(b, '\n'); {
		case i == len(b)-1:
			return b, nil
		case i >= 0: // within the first 15 bytes: shorter than any header
			return nil, fmt.Errorf("PROXY protocol v1 line %q is too short", b[:i+1])
		case len(b) == proxyV1MaxLen:
			return nil, fmt.Errorf("PROXY protocol v1 line without its CRLF in %d bytes", proxyV1MaxLen)
		}
		free := b[len(b):proxyV1MaxLen]
		n, ok, err := peek(c, free)
		switch {
		case !ok:
			n = 1
		case err != nil:
			return nil, fmt.Errorf("%w after %d bytes", err, len(b))
		case bytes.IndexByte(free[:n], '\n') >= 0:
			n = bytes.IndexByte(free[:n], '\n') + 1
		}
		m, err := io.ReadFull(c, free[:n])
		b = b[:len(b)+m]
		if err != nil {
			return nil, fmt.Errorf("%w after %d bytes", err, len(b))
		}
	}
}

// readV2 reads the rest of a v2 header whose first 15 bytes are b: the
// length's second byte, then the length, which is checked first.
func readV2(c *net.TCPConn, b []byte) ([]byte, error) {
	b = b[:proxyV2Fixed]
	if _, err := io.ReadFull(c, b[proxyMinLen:]); err != nil {
		return nil, fmt.Errorf("%w after %d bytes", err, proxyMinLen)
	}
	n := binary.BigEndian.Uint16(b[proxyV2Fixed-2:])
	if n > proxyproto.MaxV2HeaderSize {
		return nil, fmt.Errorf("PROXY protocol v2 header says %d bytes follow, more than the %d accepted", n, proxyproto.MaxV2HeaderSize)
	}
	full := make([]byte, proxyV2Fixed+int(n))
	copy(full, b)
	if m, err := io.ReadFull(c, full[proxyV2Fixed:]); err != nil {
		return nil, fmt.Errorf("%w after %d bytes", err, proxyV2Fixed+m)
	}
	return full, nil
}
