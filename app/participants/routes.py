"""Joining a study and the participant's own status."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request

from app.auth.deps import ConsentedParticipantDep, NowDep, ParticipantDep, SessionDep
from app.consent import service as consent
from app.core.ratelimit import count_message_sent
from app.i18n import translator
from app.notify.dispatch import deliver_in_background
from app.participants import service as participants
from app.participants.models import (
    EmailChangeAnswer,
    EmailChangeConfirm,
    EmailChangeRequest,
    EnrollmentAnswer,
    EnrollmentCreate,
    ParticipantMe,
    SettingsUpdate,
    UpcomingSurvey,
)
from app.studies import service as studies
from app.studies.models import Study, StudyPublic

router = APIRouter(prefix="/api/v1", tags=["participant"])


@router.get("/studies/{key}", response_model=StudyPublic)
def get_study(key: str, session: SessionDep, lang: str = "en") -> StudyPublic:
    study = studies.get_study(session, key)
    protocol = studies.current_protocol(session, study.id)  # type: ignore[arg-type]
    return StudyPublic(
        key=study.key, title=studies.localized(protocol["title"], lang),
        description=studies.localized(protocol["description"], lang),
        languages=protocol["languages"],
        protocol_version=studies.latest_protocol(session, study.id).version,  # type: ignore[arg-type, union-attr]
    )


@router.post("/studies/{key}/enrollments", response_model=EnrollmentAnswer, status_code=202)
def enroll(
    key: str, body: EnrollmentCreate, session: SessionDep, now: NowDep,
    request: Request, background: BackgroundTasks,
) -> EnrollmentAnswer:
    """Screen and enroll. A known address gets exactly the same answer as a new one."""
    study = studies.get_study(session, key)
    protocol = studies.current_protocol(session, study.id)  # type: ignore[arg-type]
    eligible, _, _ = participants.enroll(session, study, body, protocol["eligibility"], now=now)
    t = translator(body.language)
    if not eligible:
        return EnrollmentAnswer(eligible=False, message=t("join.ineligible"))
    count_message_sent(request)  # only now does the address's sign-up limit count it
    deliver_in_background(request.app, background)
    return EnrollmentAnswer(eligible=True, message=t("join.check_email"))


@router.get("/me/upcoming", response_model=list[UpcomingSurvey])
def upcoming(ctx: ConsentedParticipantDep, session: SessionDep, now: NowDep
             ) -> list[UpcomingSurvey]:
    """What is open now and what comes next, with local wall times."""
    from app.scheduling import service as scheduling

    return [UpcomingSurvey(instrument=i.instrument_key, schedule_entry=i.schedule_entry,
                           wave=i.wave, status=i.status, opens_at=i.scheduled_at,
                           closes_at=i.closes_at, local_time=i.local_time, timezone=i.timezone)
            for i in scheduling.upcoming(session, ctx.participant, now=now)]


@router.patch("/me/settings", response_model=ParticipantMe)
def change_settings(body: SettingsUpdate, ctx: ConsentedParticipantDep, session: SessionDep,
                    now: NowDep) -> ParticipantMe:
    participants.change_settings(session, ctx.participant, timezone=body.timezone,
                                 language=body.language, now=now)
    return me(ctx, session)


@router.post("/me/pause", response_model=ParticipantMe)
def pause(ctx: ConsentedParticipantDep, session: SessionDep, now: NowDep) -> ParticipantMe:
    participants.set_paused(session, ctx.participant, True, now=now)
    return me(ctx, session)


@router.post("/me/resume", response_model=ParticipantMe)
def resume(ctx: ConsentedParticipantDep, session: SessionDep, now: NowDep) -> ParticipantMe:
    participants.set_paused(session, ctx.participant, False, now=now)
    return me(ctx, session)


@router.post("/me/email", response_model=EmailChangeAnswer, status_code=202)
def request_email_change(
    body: EmailChangeRequest, ctx: ConsentedParticipantDep, session: SessionDep, now: NowDep,
    request: Request, background: BackgroundTasks,
) -> EmailChangeAnswer:
    """Always the same answer: it never tells whether the address is already in the study."""
    participants.request_email_change(session, ctx.participant, body.email, now=now)
    count_message_sent(request)
    deliver_in_background(request.app, background)
    return EmailChangeAnswer(message=translator(ctx.participant.language)("settings.email_sent"))


@router.post("/me/email/confirm", response_model=EmailChangeAnswer)
def confirm_email_change(body: EmailChangeConfirm, ctx: ConsentedParticipantDep,
                         session: SessionDep, now: NowDep, request: Request,
                         background: BackgroundTasks) -> EmailChangeAnswer:
    """Only the participant who asked for the change can confirm it (with the emailed token);
    the replaced address is told, with a link to take the change back."""
    participants.confirm_email_change(session, ctx.participant, body.token, now=now)
    deliver_in_background(request.app, background)
    return EmailChangeAnswer(
        message=translator(ctx.participant.language)("settings.email_changed"))


@router.get("/me", response_model=ParticipantMe)
def me(ctx: ParticipantDep, session: SessionDep) -> ParticipantMe:
    p = ctx.participant
    state = consent.consent_state(session, p)
    study = session.get(Study, p.study_id)
    return ParticipantMe(
        study=study.key, status=p.status, language=p.language,  # type: ignore[union-attr]
        timezone=p.timezone, enrolled_at=p.enrolled_at, consent_version=state.signed_version,
        consent_current_version=state.current_version, needs_consent=state.needs_consent,
        needs_reconsent=state.needs_reconsent,
    )
