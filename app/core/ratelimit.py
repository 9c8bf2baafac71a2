"""Rate limits on the endpoints that can be used to guess or probe: enrollment (which also sends
the magic link), a change of email address (which sends a link to the new one), opening a magic
or confirmation link, and staff login; and, on every route, failed authentications (401) per IP,
since a participant's token also works as a bearer token on the whole API.

Each rule limits requests per client IP and, where the request names a target (the email address
of an enrollment), per target as well, so neither one address can be flooded with links nor the
enrollment answer be timed across many addresses from one client. Only a request that actually
sent a message to its target counts against the target's limit (its route calls
`count_message_sent`): a person who gets the join form wrong five times, or whose address someone
else mistyped, can still get their own link, while links to one address stay limited. (The check
comes before the request and the count after it, so concurrent requests can pass a spent limit
together; the per-IP limit, counted up front, bounds that.) Limits use a moving window
(the `limits` library's strategy) over counters kept **in the database**
(app/core/ratelimit_store.py), so every server process (uvicorn --workers N, several containers)
counts against the same limits and a restart forgets nothing. IPs and targets are stored only as
keyed hashes, never as addresses. A request with a credential costs one indexed read (the IP's
failed authentications; one without any guesses nothing and costs none); only counted requests
write.

An IP's failed-authentication limit never blocks a request that carries a valid credential:
people behind one address (a university, a mobile carrier's NAT) must not be locked out by
someone guessing tokens there. Only failures (401s) are counted. Once the IP is over the limit,
the credential the route will use is looked at: the bearer token, else the browser session
cookie of the area (/staff: the staff session, elsewhere the participant's), or for a login the
emailed link or the staff token typed in. A live one passes (uncounted), a request without any
(the join form, the help page) passes too since it guesses nothing, and anything else gets 429:
a wrong guess, a valid credential next to a guessed one (only the one the route uses counts),
the staff login's second step (TOTP codes are few enough to guess) and an address change's
confirmation token. The check is one indexed lookup, made only while the IP is over a limit;
tokens are 256-bit random, so answering it does not make guessing them feasible. The login
rules (magic links, staff login) let a live link or staff token through the same way.

The middleware matches on method and path, so no route file needs to know about it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from limits import RateLimitItem, parse_many
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.core.errors import AppError, error_response
from app.core.ratelimit_store import DatabaseStorage

UNLIMITED = ("/healthz", "/readyz", "/metrics", "/static/")
MESSAGE_SENT = "wellpanel.message_sent"  # scope key: this request sent a message to its target
HtmlErrors = tuple[Callable[[Request], bool], Callable[[Request, AppError], Any]]


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"


@dataclass(frozen=True)
class Rule:
    name: str
    method: str
    path: re.Pattern[str]
    per_ip: list[RateLimitItem]
    per_target: list[RateLimitItem]
    target_field: str | None = None  # body field that names the target (JSON or form)
    login: bool = False  # guarding a login: a request with a live credential passes uncounted


def rules_from(settings: Settings) -> list[Rule]:
    enroll_ip = parse_many(settings.rate_limit_enroll_per_ip)
    enroll_target = parse_many(settings.rate_limit_enroll_per_email)
    link_ip = parse_many(settings.rate_limit_magic_link_per_ip)
    return [
        Rule("enrollment", "POST", re.compile(r"^/api/v1/studies/[^/]+/enrollments/?$"),
             enroll_ip, enroll_target, "email"),
        Rule("enrollment", "POST", re.compile(r"^/join/[^/]+/?$"),
             enroll_ip, enroll_target, "email"),
        # A change of address sends a link too, and must not probe who takes part either.
        Rule("email_change", "POST", re.compile(r"^/api/v1/me/email/?$"),
             enroll_ip, enroll_target, "email"),
        Rule("email_change", "POST", re.compile(r"^/p/settings/email/?$"),
             enroll_ip, enroll_target, "email"),
        Rule("magic_link", "GET", LINK_LOGIN, link_ip, [], login=True),
        Rule("magic_link", "POST", API_LOGIN, link_ip, [], login=True),
        Rule("magic_link", "POST", re.compile(r"^/api/v1/me/email/confirm/?$"), link_ip, []),
        Rule("magic_link", "*", re.compile(r"^/p/email/confirm/[^/]+/?$"), link_ip, []),
        Rule("magic_link", "POST", re.compile(r"^/p/email/undo/[^/]+/?$"), link_ip, []),
        Rule("staff_login", "POST", STAFF_LOGIN,
             parse_many(settings.rate_limit_staff_login_per_ip), [], login=True),
    ]


class RateLimit:
    """ASGI middleware: 429 with the error body and Retry-After when a rule's limit is spent."""

    def __init__(self, app: ASGIApp, settings: Settings, html: HtmlErrors | None = None) -> None:
        self.app = app
        self.enabled = settings.rate_limits_enabled
        self.rules = rules_from(settings)
        self.auth_failures = parse_many(settings.rate_limit_auth_failures_per_ip)
        self.key = hashlib.sha256(b"ratelimit:" + settings.secret_key.encode()).digest()
        self.html = html
        self._storage: DatabaseStorage | None = None
        self._limiter: MovingWindowRateLimiter | None = None

    def _bind(self, scope: Scope) -> None:
        """The counters live in the app's database (its engine exists once the app does)."""
        if self._limiter is None:
            self._storage = DatabaseStorage(scope["app"].state.engine, self.key)
            self._limiter = MovingWindowRateLimiter(self._storage)

    @property
    def limiter(self) -> MovingWindowRateLimiter:
        assert self._limiter is not None
        return self._limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["path"].startswith(UNLIMITED):
            await self.app(scope, receive, send)
            return
        self._bind(scope)
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        # A request without any credential guesses nothing: the failure limit never applies to
        # it, so it costs no read. The counters are in the database: never on the event loop.
        retry = None
        if _needs_body(scope) or presented_credential(scope, b"") is not None:
            retry = await run_in_threadpool(self._waiting_after_failures, ip)
        rule = self._rule_for(scope)
        target: str | None = None
        # the request's credential (NONE, LIVE or INVALID), looked at only when over a limit
        credential: str | None = None
        if retry is not None:
            credential, receive = await _credential_state(scope, receive)
            if credential != INVALID:  # a valid user, or no credential at all: not a guess
                retry = None
        if retry is None and rule is not None and not (rule.login and credential == LIVE):
            retry = await run_in_threadpool(self._spend, rule, rule.per_ip, "ip", ip)
            if retry is not None and rule.login and credential is None:
                credential, receive = await _credential_state(scope, receive)
                if credential == LIVE:  # a refused hit is not counted: nothing to give back
                    retry = None
            if retry is None and rule.target_field and rule.per_target:
                body, receive = await _buffered(receive)
                address = _field(scope, body, rule.target_field)
                if address:
                    target = self._digest(address)
                    retry = await run_in_threadpool(self._waiting, rule, rule.per_target,
                                                    "target", target)
        if retry is not None:
            await self._refuse(scope, receive, send, retry)
            return
        await self.app(scope, receive, self._counting_failures(send, ip))
        if rule is not None and target is not None and scope.get(MESSAGE_SENT):
            await run_in_threadpool(self._spend, rule, rule.per_target, "target", target)

    def _waiting_after_failures(self, ip: str) -> int | None:
        """Seconds to wait when this IP has spent its failed authentications (a token guesser
        tries bearer tokens on any route, not only the login pages)."""
        assert self._storage is not None
        items = self.auth_failures
        windows = self._storage.moving_windows(  # one read for every window of the rule
            [(item.key_for("auth_failure", ip), item.get_expiry()) for item in items])
        for item, (start, used) in zip(items, windows, strict=True):
            if used > item.amount - 1:
                return max(1, math.ceil(start + item.get_expiry() - time.time()))
        return None

    def _counting_failures(self, send: Send, ip: str) -> Send:
        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                await run_in_threadpool(self._count_failure, ip)
            await send(message)

        return counting_send

    def _count_failure(self, ip: str) -> None:
        for item in self.auth_failures:
            self.limiter.hit(item, "auth_failure", ip)

    def _rule_for(self, scope: Scope) -> Rule | None:
        for rule in self.rules:
            if rule.method in (scope["method"], "*") and rule.path.match(scope["path"]):
                return rule
        return None

    def _digest(self, target: str) -> str:
        return hmac.new(self.key, target.strip().lower().encode("utf-8", "surrogatepass"),
                        "sha256").hexdigest()

    def _waiting(self, rule: Rule, items: list[RateLimitItem], kind: str, who: str
                 ) -> int | None:
        """The seconds to wait if a limit is already spent, without counting this request."""
        waits = []
        for item in items:
            if not self.limiter.test(item, rule.name, kind, who):
                reset = self.limiter.get_window_stats(item, rule.name, kind, who).reset_time
                waits.append(max(1, math.ceil(reset - time.time())))
        return max(waits) if waits else None

    def _spend(self, rule: Rule, items: list[RateLimitItem], kind: str, who: str) -> int | None:
        """Count one hit against every limit; the seconds to wait if any is exhausted."""
        waits = []
        for item in items:
            if not self.limiter.hit(item, rule.name, kind, who):
                reset = self.limiter.get_window_stats(item, rule.name, kind, who).reset_time
                waits.append(max(1, math.ceil(reset - time.time())))
        return max(waits) if waits else None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, retry: int) -> None:
        err = RateLimited(f"Too many attempts. Please wait {retry} seconds and try again.",
                          details={"retry_after": retry})
        request = Request(scope, receive)
        if self.html is not None and self.html[0](request):
            response = await run_in_threadpool(self.html[1], request, err)
        else:
            response = error_response(err)
        response.headers["Retry-After"] = str(retry)
        await response(scope, receive, send)


LINK_LOGIN = re.compile(r"^/p/login/([^/]+)/?$")
API_LOGIN = re.compile(r"^/api/v1/session/?$")
STAFF_LOGIN = re.compile(r"^/staff/login/?$")


EMAIL_TOKEN = re.compile(r"^/p/email/(confirm|undo)/[^/]+/?$")
NONE, LIVE, INVALID = "none", "live", "invalid"
UNCHECKED = "unchecked"  # a secret the limiter cannot check (never live): a TOTP code, ...


def presented_credential(scope: Scope, body: bytes) -> tuple[str, str] | None:
    """(kind, token) of the credential the route will use for this request, None when it has
    none (kinds: app.auth.service.PRESENTED_KINDS, or UNCHECKED)."""
    from app.auth.deps import PARTICIPANT_COOKIE, STAFF_COOKIE

    path, method = scope["path"], scope["method"]
    if method == "GET" and (link := LINK_LOGIN.match(path)):
        return "link", unquote(link.group(1))
    if method == "POST" and API_LOGIN.match(path):
        return "link", _field(scope, body, "link") or ""
    if method == "POST" and STAFF_LOGIN.match(path):
        # step 1 only: the second step's TOTP code must stay limited (a million codes)
        token, code = _field(scope, body, "token"), _field(scope, body, "code")
        return ("staff_token", token.strip()) if token and not code else (UNCHECKED, "")
    if EMAIL_TOKEN.match(path):  # an address change's confirmation or undo token
        return UNCHECKED, ""
    headers = Headers(scope=scope)
    scheme, _, bearer = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and bearer.strip():
        return "bearer", bearer.strip()
    cookies = cookie_parser(headers.get("cookie", ""))
    name, kind = ((STAFF_COOKIE, "staff_session") if path.startswith("/staff")
                  else (PARTICIPANT_COOKIE, "participant_session"))
    return (kind, cookies[name]) if cookies.get(name) else None


def _needs_body(scope: Scope) -> bool:
    return scope["method"] == "POST" and bool(API_LOGIN.match(scope["path"])
                                              or STAFF_LOGIN.match(scope["path"]))


async def _credential_state(scope: Scope, receive: Receive) -> tuple[str, Receive]:
    """NONE when the request presents no credential, else LIVE or INVALID as the auth service
    says (in a worker thread); the body is read (and replayed) only for the two logins."""
    body = b""
    if _needs_body(scope):
        body, receive = await _buffered(receive)
    presented = presented_credential(scope, body)
    if presented is None:
        return NONE, receive
    state = getattr(scope.get("app"), "state", None)
    if presented[0] == UNCHECKED or state is None or not hasattr(state, "engine"):
        return INVALID, receive
    live = await run_in_threadpool(_check_credential, state, *presented)
    return (LIVE if live else INVALID), receive


def _check_credential(state: Any, kind: str, token: str) -> bool:
    from sqlalchemy.exc import SQLAlchemyError
    from sqlmodel import Session

    from app.auth import service as auth

    try:
        with Session(state.engine) as session:
            return auth.credential_is_live(session, kind, token, now=state.clock(),
                                           staff_ttl=state.settings.staff_token_ttl)
    except SQLAlchemyError:  # the database is unwell: keep the limit (429, not 500)
        return False


def count_message_sent(request: Request) -> None:
    """Called by a route that sent a message to the address its request named: only such
    requests count against that address's limit."""
    request.scope[MESSAGE_SENT] = True


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole body (the size limit outside us bounds it) and replay it downstream."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _field(scope: Scope, body: bytes, name: str) -> str | None:
    """The value of `name` in a JSON object or urlencoded form body, if it is a string."""
    headers = dict(scope.get("headers", []))
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
        if content_type == b"application/x-www-form-urlencoded":
            values = parse_qs(text).get(name)
            value: Any = values[0] if values else None
        else:
            data = json.loads(text)
            value = data.get(name) if isinstance(data, dict) else None
    except (ValueError, RecursionError):  # the route itself answers malformed bodies
        return None
    return value if isinstance(value, str) and value.strip() else None
