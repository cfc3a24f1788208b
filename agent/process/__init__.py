"""The agent process: its lifecycle and what it needs before anything runs.

    agent        Agent: every resource a stage, started in order and stopped in reverse; serve(), run()
    config       AgentConfig, from the command line
    datadir      the data directory, created, proven writable and locked
    credentials  the cluster secret and the join token that carries it
    health       what is wrong with each part, for /v1/health and gossip metadata
    log          one readable line per event
"""

__all__ = ["agent", "config", "credentials", "datadir", "health", "log"]
