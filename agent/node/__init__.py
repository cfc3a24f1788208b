"""This host: the workers that own one real thing each and report what they see.

    reconciler  this host's Docker Engine made to match the instances assigned to it
    plan        the reconciler's pure part: container configs, the plan, what to report
    docker      the Docker Engine through its API (the only module that imports aiodocker)
    health      HTTP and TCP health probes of this host's containers
    overlay     the overlay's runtime: its key, its /24, its peers from the host records
    keyring     the gossip/Raft keyring kept in line with the replicated one
    stats       a Docker stats sample summed up
    hostinfo    CPUs and memory of this machine
"""

__all__ = ["docker", "health", "hostinfo", "keyring", "overlay", "plan", "reconciler", "stats"]
