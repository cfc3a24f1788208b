"""This node's view of the cluster: the replicated state through Raft, its change feed, gossip members.

    replica   the local replica of the desired state; writes, consistent reads, proposals to the leader
    feed      applied changes, handed to the subscribers that want them
    members   gossip membership as MemberInfo records
"""

__all__ = ["feed", "members", "replica"]
