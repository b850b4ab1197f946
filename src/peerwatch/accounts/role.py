"""Roles, what each may do, and the scope of data a principal may read (docs/webapp.md, "Roles").

The one table `PERMISSIONS` says what each role may do; routes ask for a permission, never for a
role, so the authorisation matrix test reads the same table the app enforces. What a principal may
*read* is its `Scope`, which every data query takes: the filter is in the query, not in the page.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass


class Role(enum.StrEnum):
    COORDINATOR = "coordinator"  # national: every jurisdiction and unit
    INVESTIGATOR = "investigator"  # one unit: that unit's jurisdictions only
    AUDITOR = "auditor"  # reads and verifies the audit log
    ADMIN = "admin"  # users, lists, sensors; reads no target


class Permission(enum.StrEnum):
    READ_TARGETS = "read-targets"  # leads, targets, observations, explanations (within the scope)
    READ_AUDIT = "read-audit"  # the audit log and its verification
    MANAGE_USERS = "manage-users"  # list and add users
    READ_OPERATIONS = "read-operations"  # operations, as far as the scope's part of them goes
    PLAN_OPERATIONS = "plan-operations"  # preview, create and dispatch national operations
    READ_WATCHLIST = "read-watchlist"  # lists, versions, counts and provenance (no item)
    MANAGE_WATCHLIST = "manage-watchlist"  # import hash lists
    READ_SENSORS = "read-sensors"  # sensors, their chains and observation counts
    CLAIM_TARGETS = "claim-targets"  # claim, release, transfer, change the state of leads
    EXPORT_CASES = "export-cases"  # write and download case packages (within the scope)


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.COORDINATOR: frozenset(
        {
            Permission.READ_TARGETS,
            Permission.READ_OPERATIONS,
            Permission.PLAN_OPERATIONS,
            Permission.READ_WATCHLIST,
            Permission.READ_SENSORS,
            Permission.CLAIM_TARGETS,
            Permission.EXPORT_CASES,
        }
    ),
    Role.INVESTIGATOR: frozenset(
        {
            Permission.READ_TARGETS,
            Permission.READ_OPERATIONS,
            Permission.CLAIM_TARGETS,
            Permission.EXPORT_CASES,
        }
    ),
    Role.AUDITOR: frozenset({Permission.READ_AUDIT}),
    Role.ADMIN: frozenset(
        {
            Permission.MANAGE_USERS,
            Permission.READ_WATCHLIST,
            Permission.MANAGE_WATCHLIST,
            Permission.READ_SENSORS,
        }
    ),
}


@dataclass(frozen=True, slots=True)
class Scope:
    """The units whose data a principal may read: `None` means all of them (national)."""

    units: frozenset[str] | None

    @classmethod
    def everything(cls) -> Scope:
        return cls(None)

    @classmethod
    def nothing(cls) -> Scope:
        return cls(frozenset())

    @classmethod
    def of(cls, units: Collection[str]) -> Scope:
        return cls(frozenset(units))

    @property
    def is_everything(self) -> bool:
        return self.units is None

    def allows(self, unit: str | None) -> bool:
        """May a row held by `unit` be read? A row routed to no unit is national-only."""
        if self.units is None:
            return True
        return unit is not None and unit in self.units

    def describe(self) -> str:
        if self.units is None:
            return "all units"
        return ", ".join(sorted(self.units)) or "no unit"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: a signed-in user or an API token."""

    name: str  # user name, or "token:<name>"
    role: Role
    unit: str | None
    user_id: int | None = None  # None for tokens

    @property
    def scope(self) -> Scope:
        if self.role is Role.COORDINATOR:
            return Scope.everything()
        if self.role is Role.INVESTIGATOR and self.unit:
            return Scope.of({self.unit})
        return Scope.nothing()

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {text!r} (roles: {choices})") from None
