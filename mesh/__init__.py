"""Who is alive, who leads, what is desired: gossip (SWIM + Lifeguard), Raft, the keyring, the simulators."""
