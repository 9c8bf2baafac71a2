"""Every table, imported in one place so SQLModel.metadata is complete for Alembic and tests."""

from app.audit.models import AuditEvent
from app.auth.models import ParticipantCredential, StaffMember, StaffSession
from app.consent.models import (
    ConsentCopy,
    ConsentDocument,
    ConsentRecord,
    ConsentVersion,
    Withdrawal,
)
from app.core.ratelimit_store import RateLimitHit
from app.export.models import ExportJob
from app.jobs.models import Job
from app.notify.models import MailContact, OutboxMessage, StaffAlert
from app.participants.models import Contact, EmailChange, Participant, ScreeningTally
from app.studies.models import ProtocolVersion, Study
from app.surveys.models import ResponseScore, SafetyEvent, SurveyInstance, SurveyResponse

__all__ = [
    "AuditEvent", "Contact", "ConsentCopy", "ConsentDocument", "ConsentRecord", "ConsentVersion",
    "EmailChange", "ExportJob", "Job", "MailContact",
    "OutboxMessage", "Participant", "ParticipantCredential", "ProtocolVersion",
    "RateLimitHit", "ResponseScore", "SafetyEvent", "ScreeningTally", "StaffAlert", "StaffMember",
    "StaffSession", "Study",
    "SurveyInstance", "SurveyResponse", "Withdrawal",
]
