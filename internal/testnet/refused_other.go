//go:build !unix

package testnet

import "net"

// refusedAddr frees a port a listener had: without Unix sockets to hold it,
// another listener may take it before the test connects.
func refusedAddr() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", nil, err
	}
	return addr, func() {}, nil
}
