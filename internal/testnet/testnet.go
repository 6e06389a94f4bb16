// Package testnet holds network fixtures for the tests of this module.
package testnet

import "testing"

// RefusedAddr returns a loopback address, "127.0.0.1:port", at which every
// connection is refused until the test ends: an endpoint that cannot be
// reached, for the tests of what happens then.
//
// The port is held by a socket bound to it that never listens (on Unix):
// the kernel refuses each connection, and no listener can take the port
// meanwhile. The usual alternative, a listener opened and closed at once,
// frees the port for the next ephemeral allocation, and go test runs the
// test binaries of several packages in parallel: another test's server
// could get the port and answer in place of the refusal.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	addr, release, err := refusedAddr()
	if err != nil {
		t.Fatalf("testnet: no refused address: %v", err)
	}
	t.Cleanup(release)
	return addr
}
