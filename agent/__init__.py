"""Corral's agent: what one host does for the cluster.

Today it offers the agent process (HTTP API on port 8080 over a real Docker Engine), the ``corral``
command line, and the local multi-host lab (``corral lab``) that tests, demos and drills run on.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
