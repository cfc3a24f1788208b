"""The local multi-host lab: N hosts on one machine, each a network namespace with its own dockerd
and agent, joined by one underlay bridge. Every lab test, demo and drill runs on it.

``Lab`` (in :mod:`agent.lab.lab`) is the API; ``corral lab …`` (:mod:`agent.lab.cli`) drives it.
"""

from agent.lab.lab import Lab, LabError

__all__ = ["Lab", "LabError"]
