"""``corral drill``: destructive tests on the lab, run as a feature, reported as measurements."""
