""""Download my data": everything the platform holds about one participant, as JSON or CSV.

Each domain hands over its own part through its service (participants, consent, scheduling,
surveys, audit); this module only assembles and serializes them. The participant's internal id
never leaves the server (DESIGN.md): in the ledger rows it reads ``participant:me``.

CSV comes as a zip of one UTF-8 CSV per kind (the kinds have different columns); lists and
mappings inside a cell are JSON. Answers are one row per answered question.
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime
from typing import Any

from sqlmodel import Session

from app.core import csv_cells
from app.participants.models import Participant

FORMAT = "wellpanel.my-data/1"
ME = "participant:me"
CSV_FILES = ("participant", "contact", "email_changes", "consent_records", "withdrawals",
             "schedule", "answers", "scores", "safety_events", "audit_log")


def collect(session: Session, participant: Participant, *, now: datetime) -> dict[str, Any]:
    """Everything held about the participant, each part from its own domain's service."""
    from app.audit import service as audit
    from app.consent import service as consent
    from app.participants import service as participants
    from app.scheduling import service as scheduling
    from app.surveys import service as surveys

    data: dict[str, Any] = {
        "format": FORMAT, "generated_at": now,
        "participant": participants.own_record(session, participant),
        "contact": participants.own_contact(session, participant),
        "email_changes": participants.own_email_changes(session, participant),
        "consent_records": consent.own_consent_records(session, participant),
        "withdrawals": consent.own_withdrawals(session, participant),
        "schedule": scheduling.own_schedule(session, participant),
        "responses": surveys.own_responses(session, participant),
        "safety_events": surveys.own_safety_events(session, participant),
    }
    subject = f"participant:{participant.id}"
    targets = ({f"consent_record:{r['id']}" for r in data["consent_records"]}
               | {f"withdrawal:{w['id']}" for w in data["withdrawals"]}
               | {f"survey_instance:{i['instance_id']}" for i in data["schedule"]}
               | {f"safety_event:{e['id']}" for e in data["safety_events"]})
    data["audit_log"] = [_ledger_row(row, participant.id)
                         for row in audit.entries_about(session, subject, targets)]
    return data


def _ledger_row(row: Any, participant_id: str) -> dict[str, Any]:
    entry = {"seq": row.id, "occurred_at": row.occurred_at, "actor": row.actor,
             "action": row.action, "target": row.target, "details": row.details,
             "old_value": row.old_value, "new_value": row.new_value, "row_hash": row.row_hash}
    # The internal id stays on the server, wherever in the row it appears.
    return json.loads(json.dumps(entry, default=_plain).replace(
        f"participant:{participant_id}", ME).replace(participant_id, "me"))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def as_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=_plain, ensure_ascii=False, indent=2).encode("utf-8")


# ---- CSV ------------------------------------------------------------------------------------

def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=_plain, ensure_ascii=False)
    return "" if value is None else value


def _rows(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """One list of flat rows per CSV file."""
    answers, scores = [], []
    for response in data["responses"]:
        head = {k: response[k] for k in ("instance_id", "instrument", "title", "submitted_at")}
        answers += [head | {"item": a["item"], "question": a["question"], "value": a["value"],
                            "answer": "; ".join(a["answer"])} for a in response["answers"]]
        if response["scores"] is not None:
            scores.append(head | response["scores"])
    return {
        "participant": [data["participant"]],
        "contact": [data["contact"]] if data["contact"] else [],
        "email_changes": data["email_changes"],
        "consent_records": data["consent_records"],
        "withdrawals": data["withdrawals"],
        "schedule": data["schedule"],
        "answers": answers,
        "scores": scores,
        "safety_events": data["safety_events"],
        "audit_log": data["audit_log"],
    }


# Columns of files that may be empty, so an empty file still has its header.
_EMPTY_HEADERS = {
    "contact": ["email", "verified_at", "updated_at"],
    "email_changes": ["id", "new_email", "requested_at", "expires_at", "confirmed_at",
                      "cancelled_at"],
    "consent_records": ["id", "version", "decision", "language", "signature_name",
                        "statements", "decided_at"],
    "withdrawals": ["id", "scope", "requested_at", "confirmed_at", "data_deleted"],
    "schedule": ["instance_id", "schedule_entry", "wave", "instrument", "status", "opens_at",
                 "closes_at", "completed_at"],
    "answers": ["instance_id", "instrument", "title", "submitted_at", "item", "question",
                "value", "answer"],
    "scores": ["instance_id", "instrument", "title", "submitted_at", "primary_name",
               "primary", "raw", "band", "band_label"],
    "safety_events": ["id", "flag", "instrument", "instance_id", "created_at",
                      "reviewed_by_study_team_at"],
    "audit_log": ["seq", "occurred_at", "actor", "action", "target", "details", "old_value",
                  "new_value", "row_hash"],
}


def _csv(rows: list[dict[str, Any]], empty_header: list[str]) -> bytes:
    buffer = io.StringIO()
    header = list(rows[0]) if rows else empty_header
    # text cells quoted, and neutralized when they start like a formula (OWASP CSV injection)
    writer = csv_cells.DictWriter(buffer, fieldnames=header, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    # With a byte-order mark spreadsheet programs read the UTF-8 (e.g. Chinese) correctly.
    return buffer.getvalue().encode("utf-8-sig")


def as_csv_zip(data: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, rows in _rows(data).items():
            archive.writestr(f"{name}.csv", _csv(rows, _EMPTY_HEADERS.get(name, [])))
    return buffer.getvalue()


# ---- a download ----------------------------------------------------------------------------

MEDIA_TYPES = {"json": "application/json", "csv": "application/zip"}
EXTENSIONS = {"json": "json", "csv": "zip"}


def download(session: Session, participant: Participant, fmt: str, *, via: str,
             now: datetime) -> tuple[bytes, str, str]:
    """(body, media type, file name) of a download, audited without any of its content; the
    caller commits."""
    from app.audit import service as audit

    data = collect(session, participant, now=now)
    body = as_json(data) if fmt == "json" else as_csv_zip(data)
    audit.append(session, actor=f"participant:{participant.id}",
                 action="participant.data_download", target=f"participant:{participant.id}",
                 details={"format": fmt, "via": via}, now=now)
    return body, MEDIA_TYPES[fmt], f"my-data-{now:%Y-%m-%d}.{EXTENSIONS[fmt]}"


def attachment_headers(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
