"""What a study-file amendment changes, before it is applied (`wellpanel study diff`, `study load
--dry-run`, the console's protocol page).

Compares two protocol contents (the `content` stored in protocol_versions: the study file, the
consent documents' digests and the pinned instruments) section by section, in terms a researcher
and the IRB read: instruments and their items, the schedule's entries, consent versions, and the
dotted path of anything else that changed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Sections compared on their own; everything else in the study file is compared path by path.
_OWN_SECTIONS = ("instruments", "schedule", "consent")
_MAX_PATHS = 60  # a rewritten crisis-resources block lists its first paths, then a count


class Change(BaseModel):
    section: str  # instruments, schedule, consent, or the study file's top-level key
    kind: str  # added, removed, changed
    what: str  # e.g. "phq9", "biweekly.open_for_hours", "1.2"
    old: Any = None
    new: Any = None


class StudyDiff(BaseModel):
    study_key: str
    from_version: int | None  # the protocol version compared against; None: a new study
    unchanged: bool
    changes: list[Change]
    new_consent_versions: list[str]
    reconsent_required: bool  # a new current consent version asks everyone to sign again
    replanned_participants: int = 0  # scheduled people whose future would be re-planned

    def sections(self) -> dict[str, list[Change]]:
        grouped: dict[str, list[Change]] = {}
        for change in self.changes:
            grouped.setdefault(change.section, []).append(change)
        return grouped


def compare(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Change]:
    """Every change from protocol content `old` (None: nothing loaded yet) to `new`."""
    if old is None:
        return [Change(section="study", kind="added", what=new["study"]["key"])]
    old_study, new_study = old["study"], new["study"]
    return [*_instruments(old["instruments"], new["instruments"]),
            *_schedule(old_study["schedule"], new_study["schedule"]),
            *_consent(old_study["consent"], new_study["consent"], old.get("consent_documents", {}),
                      new.get("consent_documents", {})),
            *_others(old_study, new_study)]


def new_consent_versions(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    before = {v["version"] for v in old["study"]["consent"]["versions"]} if old else set()
    return [v["version"] for v in new["study"]["consent"]["versions"]
            if v["version"] not in before]


def reconsent_required(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """True when the amendment makes a new version current that asks for signing again."""
    consent = new["study"]["consent"]
    if old is None or old["study"]["consent"]["current"] == consent["current"]:
        return False
    current = next(v for v in consent["versions"] if v["version"] == consent["current"])
    return bool(current.get("requires_reconsent"))


# ---- sections -------------------------------------------------------------------------------

def _instruments(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes = _keys("instruments", old, new)
    for key in sorted(old.keys() & new.keys()):
        before, after = old[key], new[key]
        if before["sha256"] == after["sha256"]:
            continue
        changes.append(Change(section="instruments", kind="changed", what=f"{key}.version",
                              old=before["version"], new=after["version"]))
        changes += _items(key, before["definition"].get("items", []),
                          after["definition"].get("items", []))
        rest_old = {k: v for k, v in before["definition"].items() if k != "items"}
        rest_new = {k: v for k, v in after["definition"].items() if k != "items"}
        changes += _paths("instruments", key, rest_old, rest_new)
    return changes


def _items(instrument: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[Change]:
    by_id_old = {item["id"]: item for item in old}
    by_id_new = {item["id"]: item for item in new}
    changes = _keys("instruments", by_id_old, by_id_new, prefix=f"{instrument}.items.")
    for item in sorted(by_id_old.keys() & by_id_new.keys()):
        changes += _paths("instruments", f"{instrument}.items.{item}", by_id_old[item],
                          by_id_new[item])
    return changes


def _schedule(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    entries_old = {e["name"]: e for e in old.get("entries", [])}
    entries_new = {e["name"]: e for e in new.get("entries", [])}
    changes = _keys("schedule", entries_old, entries_new)
    for name in sorted(entries_old.keys() & entries_new.keys()):
        changes += _paths("schedule", name, entries_old[name], entries_new[name])
    rest = [k for k in {*old, *new} if k != "entries"]
    changes += _paths("schedule", "", {k: old.get(k) for k in rest}, {k: new.get(k) for k in rest})
    return changes


def _consent(old: dict[str, Any], new: dict[str, Any], old_docs: dict[str, Any],
             new_docs: dict[str, Any]) -> list[Change]:
    versions_old = {v["version"]: v for v in old["versions"]}
    versions_new = {v["version"]: v for v in new["versions"]}
    changes = _keys("consent", versions_old, versions_new, prefix="version ")
    if old["current"] != new["current"]:
        changes.append(Change(section="consent", kind="changed", what="current",
                              old=old["current"], new=new["current"]))
    for version in sorted(versions_old.keys() & versions_new.keys()):
        changes += _paths("consent", f"version {version}", versions_old[version],
                          versions_new[version])
        changes += _paths("consent", f"version {version}.documents", old_docs.get(version, {}),
                          new_docs.get(version, {}))
    rest = [k for k in {*old, *new} if k not in ("versions", "current")]
    changes += _paths("consent", "", {k: old.get(k) for k in rest}, {k: new.get(k) for k in rest})
    return changes


def _others(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes: list[Change] = []
    for key in sorted({*old, *new} - set(_OWN_SECTIONS)):
        if key not in new:
            changes.append(Change(section=key, kind="removed", what=key))
        elif key not in old:
            changes.append(Change(section=key, kind="added", what=key, new=_short(new[key])))
        else:
            changes += _paths(key, "", old[key], new[key])
    return changes


# ---- generic comparison ---------------------------------------------------------------------

def _keys(section: str, old: dict[str, Any], new: dict[str, Any], prefix: str = ""
          ) -> list[Change]:
    return ([Change(section=section, kind="added", what=f"{prefix}{k}")
             for k in sorted(new.keys() - old.keys())]
            + [Change(section=section, kind="removed", what=f"{prefix}{k}")
               for k in sorted(old.keys() - new.keys())])


def _paths(section: str, base: str, old: Any, new: Any) -> list[Change]:
    """Leaf-level differences under `base` (lists compare as wholes), capped per call."""
    found: list[Change] = []
    _walk(section, base, old, new, found)
    if len(found) > _MAX_PATHS:
        hidden = len(found) - _MAX_PATHS
        found = found[:_MAX_PATHS] + [Change(section=section, kind="changed",
                                             what=f"{base or section}: {hidden} more paths")]
    return found


def _walk(section: str, path: str, old: Any, new: Any, found: list[Change]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted({*old, *new}, key=str):
            child = f"{path}.{key}" if path else str(key)
            if key not in new:
                found.append(Change(section=section, kind="removed", what=child,
                                    old=_short(old[key])))
            elif key not in old:
                found.append(Change(section=section, kind="added", what=child,
                                    new=_short(new[key])))
            else:
                _walk(section, child, old[key], new[key], found)
        return
    found.append(Change(section=section, kind="changed", what=path or section,
                        old=_short(old), new=_short(new)))


def _short(value: Any) -> Any:
    """Scalars as they are; a long text or a structure as a short description."""
    if isinstance(value, str) and len(value) > 120:
        return value[:117] + "..."
    if isinstance(value, dict):
        return f"{{{len(value)} keys}}"
    if isinstance(value, list):
        return value if len(str(value)) <= 120 else f"[{len(value)} entries]"
    return value


def as_text(diff: StudyDiff) -> str:
    """The diff as the CLI prints it: a summary line, then one line per change by section."""
    if diff.from_version is None:
        return f"{diff.study_key}: a new study (nothing loaded yet)"
    if diff.unchanged:
        return f"{diff.study_key}: unchanged from protocol version {diff.from_version}"
    lines = [f"{diff.study_key}: changes from protocol version {diff.from_version}"]
    if diff.new_consent_versions:
        lines.append(f"  new consent versions: {', '.join(diff.new_consent_versions)}"
                     + (" (everyone signs again)" if diff.reconsent_required else ""))
    lines.append(f"  participants whose future surveys are re-planned: "
                 f"{diff.replanned_participants}")
    for section, changes in diff.sections().items():
        lines.append(f"[{section}]")
        lines += [f"  {_SIGN[c.kind]} {c.what}{_values(c)}" for c in changes]
    return "\n".join(lines)


_SIGN = {"added": "+", "removed": "-", "changed": "~"}


def _values(change: Change) -> str:
    if change.kind == "changed" and (change.old is not None or change.new is not None):
        return f": {change.old!r} -> {change.new!r}"
    if change.kind == "added" and change.new is not None:
        return f": {change.new!r}"
    return ""
