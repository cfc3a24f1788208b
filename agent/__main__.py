"""``python -m agent`` is the ``corral`` command (the lab starts agents this way, in each namespace)."""

from agent.cli.main import main

main()
