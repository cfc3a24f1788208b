"""Start order: a service's containers are created only once the services it ``depends_on`` are
started, healthy or completed (compose's ``service_started``, ``service_healthy``,
``service_completed_successfully``), as the replicated state shows them.

Pure: read by each host's reconciler before it creates a container that is missing (not before a
replacement: a running stack is not held back because a dependency restarts, as with compose).
``healthy`` of a service without a health check is ``started``; ``completed`` is every instance exited
with 0 (a one-shot job such as a migration).
"""

from __future__ import annotations

from agent.model.entities import Health, Service, Status
from agent.model.spec import DependsOn
from agent.model.state import ClusterState


def waiting_for(state: ClusterState, service: Service) -> str | None:
    """Why ``service``'s new containers must wait (the first unmet dependency, in words), or None."""
    if not service.spec.depends_on:
        return None
    siblings = {s.name: s for s in state.services_of(service.stack)}
    for name, condition in sorted(service.spec.depends_on.items()):
        other = siblings.get(name)
        if other is None:
            return f"waiting for {name}, which is not a service of this stack"
        instances = state.instances_of(other.id)
        running = [i for i in instances if i.status == Status.RUNNING]
        if condition == DependsOn.STARTED and not running:
            return f"waiting for {name} to start"
        if condition == DependsOn.HEALTHY:
            if other.spec.health_check is None and not running:
                return f"waiting for {name} to start (it has no health check)"
            if other.spec.health_check is not None and not any(i.health == Health.HEALTHY for i in running):
                return f"waiting for {name} to be healthy"
        if condition == DependsOn.COMPLETED and (not instances or not all(
                i.status == Status.EXITED and i.exit_code == 0 for i in instances)):
            return f"waiting for {name} to complete successfully"
    return None


__all__ = ["waiting_for"]
