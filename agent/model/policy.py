"""Who may do what: one pure function, asked by the API for every request and by the state machine
again for every command it applies.

Theory of operation. A caller is a user, acting through a credential (an API key or a login session,
which is a key with a short expiry). What the caller may do is its :class:`Grants`:

- ``admin``: a cluster administrator (users, teams, environments, the keyring, hosts);
- ``roles``: a role per environment, the user's own and its teams' (the highest wins);
- ``scope``: a key made for one environment acts in that environment only;
- ``cap``: a key made with a role acts with at most that role (a ``read-only`` key of an owner reads);
- ``scraper``: a metrics key (``corral apikey create --metrics``) may scrape ``/metrics`` and nothing
  else: not even what any credential may (whoami, the API's document). An administrator's only: it
  scrapes while its owner is one (``admin`` says whether it is, nothing more).

Every route and every command needs one :class:`Permission`. The environment ones (``read``,
``deploy``, ``infra``, ``manage``) need a role in the environment the request is about, at least the
one :data:`NEEDED` names — Rancher 1.6's environment roles: ``owner`` manages the environment's
members, ``member`` also changes its infrastructure, ``restricted`` deploys but cannot touch
infrastructure, ``read-only`` reads. ``admin`` needs a cluster administrator acting with a credential
that is neither scoped nor capped; ``system`` is what only agents do (placements, status reports,
host records), never a user. ``metrics`` (``GET /metrics``) needs an administrator's unscoped,
uncapped credential or a metrics key. ``public`` routes need no credential at all (``GET /v1/health``).

An admin is the owner of every environment. Nothing here reads a clock or the state: callers pass
the grants in.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Role(enum.StrEnum):
    """Append only: roles are stored in the replicated state."""

    OWNER = "owner"
    MEMBER = "member"
    RESTRICTED = "restricted"
    READ_ONLY = "read-only"


RANK: dict[Role, int] = {Role.READ_ONLY: 1, Role.RESTRICTED: 2, Role.MEMBER: 3, Role.OWNER: 4}


class Permission(enum.StrEnum):
    PUBLIC = "public"
    """No credential needed."""
    AUTHENTICATED = "authenticated"
    """Any valid credential (what one may see of oneself, the API's document, the cluster's members)."""
    READ = "read"
    DEPLOY = "deploy"
    """Stacks, services, containers, the kv store: restricted and above."""
    INFRA = "infra"
    """An environment's infrastructure: member and above."""
    MANAGE = "manage"
    """An environment's members and their roles: owner."""
    ADMIN = "admin"
    SYSTEM = "system"
    """Agents only (sealed with the cluster's key): never a user."""
    METRICS = "metrics"
    """``GET /metrics``: an administrator, or a metrics key (one that can do nothing else)."""


NEEDED: dict[Permission, Role] = {
    Permission.READ: Role.READ_ONLY, Permission.DEPLOY: Role.RESTRICTED, Permission.INFRA: Role.MEMBER,
    Permission.MANAGE: Role.OWNER,
}
ENVIRONMENT_PERMISSIONS = frozenset(NEEDED)


@dataclasses.dataclass(frozen=True)
class Grants:
    admin: bool = False
    roles: Mapping[str, Role] = dataclasses.field(default_factory=dict)
    scope: str | None = None
    cap: Role | None = None
    scraper: bool = False
    """A metrics key: it may scrape (while ``admin``) and do nothing else."""


NOBODY = Grants()


def lower(a: Role, b: Role | None) -> Role:
    return a if b is None or RANK[a] <= RANK[b] else b


def role_in(grants: Grants, environment: str) -> Role | None:
    """The role the caller acts with in ``environment``; None when it has none there."""
    if grants.scraper:
        return None
    if grants.scope is not None and grants.scope != environment:
        return None
    role = Role.OWNER if grants.admin else grants.roles.get(environment)
    return None if role is None else lower(role, grants.cap)


def is_admin(grants: Grants) -> bool:
    return grants.admin and grants.scope is None and grants.cap is None and not grants.scraper


def allowed(grants: Grants, permission: Permission, environment: str | None = None) -> bool:
    """May a caller with ``grants`` do what needs ``permission`` (in ``environment``, for the
    environment permissions; without one, they ask whether the caller has that role anywhere)."""
    if permission is Permission.PUBLIC:
        return True
    if grants.scraper:
        return permission is Permission.METRICS and grants.admin
    if permission is Permission.AUTHENTICATED:
        return True
    if permission is Permission.METRICS:
        return is_admin(grants)
    if permission is Permission.ADMIN:
        return is_admin(grants)
    if permission is Permission.SYSTEM:
        return False
    role = role_in(grants, environment) if environment is not None else best_role(grants)
    return role is not None and RANK[role] >= RANK[NEEDED[permission]]


def best_role(grants: Grants) -> Role | None:
    """The highest role the caller acts with in any environment."""
    if grants.scraper:
        return None
    if grants.scope is not None:
        return role_in(grants, grants.scope)
    if grants.admin:
        return lower(Role.OWNER, grants.cap)
    return max((lower(r, grants.cap) for r in grants.roles.values()), key=RANK.__getitem__, default=None)


def readable(grants: Grants, environments: Mapping[str, object] | frozenset[str] | set[str]) -> frozenset[str]:
    """The environments (of those named) the caller may read."""
    return frozenset(e for e in environments if role_in(grants, e) is not None)


def may_delegate(grants: Grants, scope: str | None, cap: Role | None) -> bool:
    """May a caller make a key with this scope and cap? Never one that can do more than its own
    credential: a scoped credential makes keys of its scope only, a capped one no higher a cap; a
    metrics key makes none."""
    if grants.scraper:
        return False
    if grants.scope is not None and scope != grants.scope:
        return False
    return grants.cap is None or (cap is not None and RANK[cap] <= RANK[grants.cap])


__all__ = ["ENVIRONMENT_PERMISSIONS", "NEEDED", "NOBODY", "RANK", "Grants", "Permission", "Role", "allowed",
           "best_role", "is_admin", "lower", "may_delegate", "readable", "role_in"]
