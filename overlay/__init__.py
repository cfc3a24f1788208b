"""The encrypted container network on 10.42.0.0/16: leases, sessions, TUN/UDP data path, host plumbing."""
