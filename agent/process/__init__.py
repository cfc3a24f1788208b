"""The agent process: its lifecycle and what it needs before anything runs.

    agent        Agent: every resource a stage, started in order and stopped in reverse; serve(), run()
    config       AgentConfig, from the command line
    datadir      the data directory, created, proven writable and locked
    credentials  the cluster secret
    bootstrap    what a new cluster starts with: its CA, first join token and first administrator
    joining      a new host's side of the join exchange (it pins the CA the token names)
    certs        this node's TLS files and the SSL contexts made from them, renewed in place
    health       what is wrong with each part, for /v1/health and gossip metadata
    log          one readable line per event
"""

__all__ = ["agent", "bootstrap", "certs", "config", "credentials", "datadir", "health", "joining", "log"]
