"""What only the leader does: Raft membership from gossip, the host records, placements (the leader
loop over the pure planner in agent/model/placement.py).

    leader   the loop: wakes on gossip and on the changes placements depend on
"""

__all__ = ["leader"]
