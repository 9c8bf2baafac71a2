"""The study file's `safety` block: who is alerted, when an event escalates, who may reveal a
participant's contact. Read from the protocol in force (the schema checks its form; `problems`
checks what the schema cannot)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# Domains reserved for examples and tests (RFC 2606, RFC 6761): an address there reaches nobody.
PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net")
PLACEHOLDER_SUFFIXES = (".invalid", ".test", ".example", ".localhost")


@dataclass(frozen=True)
class StaffContact:
    name: str
    email: str


@dataclass(frozen=True)
class SafetyConfig:
    on_call: tuple[StaffContact, ...]
    escalation: StaffContact
    acknowledge_within: timedelta
    reveal_roles: frozenset[str]
    reveal_staff: frozenset[str]

    @property
    def acknowledge_within_minutes(self) -> int:
        return int(self.acknowledge_within.total_seconds() // 60)

    def may_reveal(self, role: str, name: str) -> bool:
        """Whether a staff member may see a participant's address: their role or their name is
        listed (admin is not implied: the study file says who follows up)."""
        return role in self.reveal_roles or name in self.reveal_staff

    def placeholders(self) -> list[str]:
        """The addresses that reach nobody (left from the template, to be replaced)."""
        return [c.email for c in (*self.on_call, self.escalation) if is_placeholder(c.email)]


def is_placeholder(email: str) -> bool:
    domain = email.rsplit("@", 1)[-1].lower()
    return (domain in PLACEHOLDER_DOMAINS or domain.endswith(PLACEHOLDER_SUFFIXES)
            or any(domain.endswith("." + d) for d in PLACEHOLDER_DOMAINS))


def _contact(raw: dict[str, Any]) -> StaffContact:
    return StaffContact(name=str(raw["name"]), email=str(raw["email"]))


def from_study(study: dict[str, Any]) -> SafetyConfig | None:
    """The safety block of a study file's content (None for a protocol loaded before it)."""
    block = study.get("safety")
    if not block:
        return None
    return SafetyConfig(
        on_call=tuple(_contact(c) for c in block["on_call"]),
        escalation=_contact(block["escalation_contact"]),
        acknowledge_within=timedelta(minutes=int(block["acknowledge_within_minutes"])),
        reveal_roles=frozenset(block.get("reveal_contact_roles") or ()),
        reveal_staff=frozenset(block.get("reveal_contact_staff") or ()))


def problems(study: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, problem) for what the schema cannot check: known roles, no address twice, an
    escalation contact who is a second person."""
    from app.auth.models import STAFF_ROLES

    block = study.get("safety")
    if not block:
        return []
    found: list[tuple[str, str]] = []
    for i, role in enumerate(block.get("reveal_contact_roles") or []):
        if role not in STAFF_ROLES:
            found.append((f"safety/reveal_contact_roles/{i}",
                          f"{role!r} is not a staff role ({', '.join(STAFF_ROLES)})"))
    on_call = [c["email"].lower() for c in block["on_call"]]
    for i, email in enumerate(on_call):
        if email in on_call[:i]:
            found.append((f"safety/on_call/{i}/email", "this address is listed twice"))
    if block["escalation_contact"]["email"].lower() in on_call:
        found.append(("safety/escalation_contact/email",
                      "the escalation contact must be a second person, not one of on_call"))
    return found
