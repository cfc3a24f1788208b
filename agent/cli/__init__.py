"""The ``corral`` command line (``agent.cli.main:main``).

    main        the command group, and ``corral agent`` (the agent process)
    output      tables, and the one error path every command shares
    client      the API client (synchronous)
    execs       ``corral exec``: the websocket client, the raw terminal
    hosts, stacks, services, containers, keys: the user's commands, by resource
"""

__all__ = ["client", "containers", "execs", "hosts", "keys", "main", "output", "services", "stacks"]
