"""`audit verify --deep`: the data the ledger vouches for, recomputed.

The ledger holds hashes, not data: each response.store row the SHA-256 of the answers as
accepted, each consent_version.publish / consent_document.add row the hash of every consent
document, each consent.sign / consent.decline row the hash of the document signed and (since
stored copies exist) of the frozen copy. This recomputes every stored answer's, document's and
copy's hash and compares. Rows from before a hash was recorded are counted, not failed; answers
erased on a withdrawal that asked for it are expected to be gone. Checked against a chain that
`verify` found intact, this shows the data was not edited after the fact.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from app.audit.models import AuditEvent

_MAX_LISTED = 50  # problems listed in full; the count is always exact


class DataProblem(BaseModel):
    kind: str  # answers_changed | answers_missing | answers_unrecorded | document_changed |
    #            document_unrecorded | copy_changed | record_changed
    target: str
    message: str


class DeepReport(BaseModel):
    ok: bool
    answers_checked: int = 0
    answers_without_hash: int = 0  # ledger rows older than response_sha256
    answers_erased: int = 0  # deleted on withdrawal, as asked
    documents_checked: int = 0
    copies_checked: int = 0
    records_checked: int = 0
    problem_count: int = 0
    problems: list[DataProblem] = []

    def lines(self) -> list[str]:
        head = (f"data under the ledger {'intact' if self.ok else 'CHANGED'}: "
                f"{self.answers_checked} answers, {self.documents_checked} consent documents, "
                f"{self.copies_checked} signed copies, {self.records_checked} consent records "
                "checked")
        notes = []
        if self.answers_without_hash:
            notes.append(f"  {self.answers_without_hash} answers were stored before the ledger "
                         "recorded their hash and cannot be checked")
        if self.answers_erased:
            notes.append(f"  {self.answers_erased} answers were erased on withdrawal, as asked")
        listed = [f"  {p.kind}: {p.target}: {p.message}" for p in self.problems]
        more = self.problem_count - len(self.problems)
        return [head, *notes, *listed] + ([f"  ... and {more} more"] if more > 0 else [])


def _ledger_rows(session: Session, actions: tuple[str, ...]) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.exec(select(AuditEvent).where(col(AuditEvent.action).in_(actions),
                                                     AuditEvent.id > last)
                            .order_by(col(AuditEvent.id)).limit(5000)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id


class _Collector:
    def __init__(self) -> None:
        self.problems: list[DataProblem] = []
        self.count = 0

    def add(self, kind: str, target: str, message: str) -> None:
        self.count += 1
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(DataProblem(kind=kind, target=target, message=message))


def verify_data(session: Session) -> DeepReport:
    found = _Collector()
    report = DeepReport(ok=True)
    _check_answers(session, report, found)
    _check_documents(session, report, found)
    _check_consent(session, report, found)
    report.problem_count, report.problems = found.count, found.problems
    report.ok = found.count == 0
    return report


def _check_answers(session: Session, report: DeepReport, found: _Collector) -> None:
    from app.consent import service as consent
    from app.surveys import service as surveys

    recorded: dict[str, tuple[str | None, str]] = {}  # instance -> (hash, actor)
    for row in _ledger_rows(session, ("response.store",)):
        instance = (row.target or "").removeprefix("survey_instance:")
        recorded.setdefault(instance, (row.details.get("response_sha256"), row.actor))
    seen: set[str] = set()
    for instance, _participant, digest in surveys.stored_answer_hashes(session):
        seen.add(instance)
        report.answers_checked += 1
        entry = recorded.get(instance)
        if entry is None:
            found.add("answers_unrecorded", f"survey_instance:{instance}",
                      "stored answers with no response.store row in the ledger")
        elif entry[0] is None:
            report.answers_without_hash += 1
        elif entry[0] != digest:
            found.add("answers_changed", f"survey_instance:{instance}",
                      f"the stored answers hash to {digest[:12]}..., the ledger recorded "
                      f"{entry[0][:12]}...")
    erased = {f"participant:{p}" for p in consent.erased_participants(session)}
    for instance, (_digest, actor) in recorded.items():
        if instance in seen:
            continue
        if actor in erased:
            report.answers_erased += 1
        else:
            found.add("answers_missing", f"survey_instance:{instance}",
                      "the ledger recorded answers that are no longer stored (and no "
                      "withdrawal asked for their deletion)")


def _document_hashes_in_ledger(session: Session) -> dict[tuple[str, str, str], str]:
    hashes: dict[tuple[str, str, str], str] = {}
    for row in _ledger_rows(session, ("consent_version.publish", "consent_document.add")):
        study, _, version = (row.target or "").removeprefix("study:").partition("/consent:")
        value: Any = row.new_value or {}
        if row.action == "consent_version.publish":
            for language, digest in (value.get("documents") or {}).items():
                hashes.setdefault((study, version, language), digest)
        elif "language" in value:
            hashes.setdefault((study, version, value["language"]), value.get("sha256"))
    return hashes


def _check_documents(session: Session, report: DeepReport, found: _Collector) -> None:
    from app.consent import service as consent

    recorded = _document_hashes_in_ledger(session)
    for doc in consent.stored_document_hashes(session):
        report.documents_checked += 1
        target = f"study:{doc.study}/consent:{doc.version}/{doc.language}"
        want = recorded.get((doc.study, doc.version, doc.language))
        if want is None:
            found.add("document_unrecorded", target,
                      "a consent document the ledger never recorded being published")
        elif doc.text_sha256 != want:
            found.add("document_changed", target,
                      f"the text hashes to {doc.text_sha256[:12]}..., the ledger recorded "
                      f"{want[:12]}... when it was published")
        elif doc.stored_sha256 != want:
            found.add("document_changed", target,
                      "the document's stored hash differs from the ledger's")


def _check_consent(session: Session, report: DeepReport, found: _Collector) -> None:
    from app.consent import service as consent

    decisions: dict[int, dict[str, Any]] = {}
    for row in _ledger_rows(session, ("consent.sign", "consent.decline")):
        record = (row.target or "").removeprefix("consent_record:")
        if record.isdigit():
            decisions.setdefault(int(record), row.details)
    for record_id, document_sha in consent.stored_record_hashes(session).items():
        report.records_checked += 1
        details = decisions.get(record_id)
        if details is None:
            found.add("record_unrecorded", f"consent_record:{record_id}",
                      "a consent decision with no row in the ledger")
        elif details.get("document_sha256") != document_sha:
            found.add("record_changed", f"consent_record:{record_id}",
                      "the record names another document than the one the ledger recorded")
    for record_id, stored, digest in consent.stored_copy_hashes(session):
        report.copies_checked += 1
        want = (decisions.get(record_id) or {}).get("copy_sha256")
        if digest != want or stored != want:
            found.add("copy_changed", f"consent_record:{record_id}",
                      "the signed copy kept for the participant does not match the ledger")
