"""The console's HTTP security: headers on every answer, signed session cookies, CSRF tokens.

The session is a cookie signed with a key only the console can read (itsdangerous, HMAC): it
holds the user's name, role, a fingerprint of the password hash it was opened with and a CSRF
token. It is `HttpOnly`, `SameSite=Strict`, and `Secure` whenever the console speaks TLS (on
plain HTTP only loopback is allowed, where a browser would drop a Secure cookie).
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline script or style anywhere (the SVG plot is styled by classes from the stylesheet).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The relay's HTML report is one self-contained page with inline CSS and no script.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class SecurityHeaders:
    """ASGI middleware: the headers above (and the CSP unless the route set its own)."""

    def __init__(self, app: ASGIApp, tls: bool) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = dict(HEADERS)
                if b"content-security-policy" not in present:
                    extra["content-security-policy"] = CSP
                if self.tls:
                    extra["strict-transport-security"] = "max-age=31536000"
                headers += [(k.encode(), v.encode()) for k, v in extra.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    user: str = ""
    role: str = ""
    fingerprint: str = ""


class Sessions:
    def __init__(self, key: bytes, lifetime: int, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="relayguard-console-session")
        self.lifetime = lifetime
        self.secure = secure
        # __Host- binds the cookie to this origin: only a Secure cookie may carry the prefix.
        self.cookie = "__Host-relayguard-console" if secure else "relayguard-console"

    def read(self, request: Request) -> Session | None:
        value = request.cookies.get(self.cookie)
        if not value:
            return None
        try:
            data: Any = self._serializer.loads(value, max_age=self.lifetime)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        return Session(
            data["csrf"],
            str(data.get("user", "")),
            str(data.get("role", "")),
            str(data.get("fp", "")),
        )

    def write(self, response: Response, session: Session) -> None:
        value = self._serializer.dumps(
            {
                "csrf": session.csrf,
                "user": session.user,
                "role": session.role,
                "fp": session.fingerprint,
            }
        )
        response.set_cookie(
            self.cookie,
            value,
            max_age=self.lifetime,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(
            self.cookie, path="/", secure=self.secure, httponly=True, samesite="strict"
        )


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(session: Session | None, submitted: object) -> bool:
    return (
        session is not None
        and isinstance(submitted, str)
        and hmac.compare_digest(session.csrf.encode(), submitted.encode())
    )


def session_key(path: Path) -> bytes:
    """The signing key: made once (0600) and kept, so a restart keeps the sessions."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another start made it first
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key
