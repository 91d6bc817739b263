"""The Starlette application of `relayguard api`: parse the request, call the core, map the answer.

No policy lives here: the token says which source is sending, and Postfix with the milter decides
about the message exactly as for SMTP (source, sender, recipients, content, DKIM, audit). What the
milter refuses comes back as the HTTP error with the milter's reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relayguard.config import Config
from relayguard.config.api import ApiSettings
from relayguard.core.errors import ConfigError
from relayguard.services.api import compose, tokens
from relayguard.services.api.errors import ApiError, bad_field
from relayguard.services.api.handoff import Handoff
from relayguard.services.api.openapi import document
from relayguard.state import StateStore, StateUnavailable

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
PENDING_TTL = 300.0  # seconds a key stays claimed by a request that never finished (crash)
JSON_OVERHEAD = 65_536  # a JSON request may exceed the message size by base64 and field names
Build = Callable[[Request, bytes, ApiSettings], compose.Outgoing]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    retry_after: int | None = None

    def response(self) -> Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return JSONResponse(self.body, self.status, headers=headers)

    def to_json(self) -> str:
        return json.dumps({"status": self.status, "body": self.body})

    @staticmethod
    def from_json(text: str) -> Answer:
        data = json.loads(text)
        return Answer(int(data["status"]), data["body"])


def _error(exc: ApiError) -> Answer:
    return Answer(exc.status, exc.body(), exc.retry_after)


class SendApi:
    """One per process; `clock` is injected so that tests control token expiry. `reload` swaps
    the configuration whole (SIGHUP); a request reads `self.config` once and keeps that snapshot.
    The listener, the state backend and the relay login are read at start only."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        handoff: Handoff,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.reload(config)
        self.store = store
        self.handoff = handoff
        self.clock = clock

    def reload(self, config: Config) -> None:
        if config.api is None or config.state is None:
            raise ConfigError([f"{config.path}: api: the send API needs [api] and [state]"])
        self.config = config

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/messages/raw", self.raw, methods=["POST"]),
                Route("/v1/openapi.json", self.openapi, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.handoff.close()

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(document())

    async def messages(self, request: Request) -> Response:
        limit = _settings(self.config).max_message_bytes * 4 // 3 + JSON_OVERHEAD
        return await self._handle(request, limit, self._from_json)

    async def raw(self, request: Request) -> Response:
        return await self._handle(request, _settings(self.config).max_message_bytes, self._from_raw)

    def _from_json(self, request: Request, body: bytes, settings: ApiSettings) -> compose.Outgoing:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise bad_field("Content-Type", "must be application/json")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_field("", f"not JSON: {exc}") from None
        return compose.compose(data, settings.headers, self.clock())

    def _from_raw(self, request: Request, body: bytes, settings: ApiSettings) -> compose.Outgoing:
        if not request.headers.get("content-type", "").startswith("message/rfc822"):
            raise bad_field("Content-Type", "must be message/rfc822")
        query = request.query_params
        return compose.parse_raw(
            body, query.get("mail_from", ""), query.getlist("rcpt"), self.clock()
        )

    async def _handle(
        self,
        request: Request,
        limit: int,
        build: Build,
    ) -> Response:
        """The body is read here; everything else (token, message, idempotency, hand-off) runs in
        one worker thread: a thread hop costs more CPU than composing a 10 KB message."""
        try:
            body = await _read_body(request, limit)
        except ApiError as exc:
            return _error(exc).response()
        answer = await run_in_threadpool(self._process, request, body, build)
        return answer.response()

    def _process(self, request: Request, body: bytes, build: Build) -> Answer:
        config = self.config
        settings = _settings(config)
        try:
            caller = tokens.authenticate(
                self.store, config, request.headers.get("authorization", ""), self.clock()
            )
            outgoing = build(request, body, settings)
            if len(outgoing.data) > settings.max_message_bytes:
                raise ApiError(413, f"the message exceeds {settings.max_message_bytes} bytes")
            key = _idempotency_key(request, caller)
        except ApiError as exc:
            return _error(exc)
        except StateUnavailable as exc:
            log.error("state backend unavailable: %s", exc)
            return Answer(503, ApiError(503, "the state backend is unavailable").body(), 30)
        if key is None:
            return self._send(caller, outgoing)
        ttl = float(settings.idempotency_ttl)
        return self._send_once(caller, outgoing, key, _fingerprint(request, body), ttl)

    def _send(self, caller: tokens.Caller, outgoing: compose.Outgoing) -> Answer:
        try:
            queue_id = self.handoff.send(caller.source, outgoing)
        except ApiError as exc:
            log.info(
                "token %s source %s: refused %d: %s",
                caller.token_id, caller.source, exc.status, exc.reason,
            )  # fmt: skip
            return _error(exc)
        log.info(
            "token %s source %s: queued %s message-id %s",
            caller.token_id, caller.source, queue_id, outgoing.message_id,
        )  # fmt: skip
        return Answer(202, {"queue_id": queue_id, "message_id": outgoing.message_id})

    def _send_once(
        self,
        caller: tokens.Caller,
        outgoing: compose.Outgoing,
        key: str,
        fingerprint: str,
        ttl: float,
    ) -> Answer:
        """The first request with KEY sends; a retry with the same body gets the first answer; a
        different body with the same key is refused. Temporary failures free the key again."""
        try:
            earlier = self.store.claim_idempotency(key, fingerprint, self.clock(), PENDING_TTL)
        except StateUnavailable as exc:
            log.error("state backend unavailable: %s", exc)
            return _error(ApiError(503, "the state backend is unavailable", "", 30))
        if earlier is not None:
            if earlier.fingerprint != fingerprint:
                return _error(ApiError(422, "reused with a different request", "Idempotency-Key"))
            if not earlier.result:
                return _error(ApiError(409, "a request with this key is in progress", "", 1))
            return Answer.from_json(earlier.result)
        answer = self._send(caller, outgoing)
        try:
            if answer.status in (429, 503):
                self.store.release_idempotency(key)
            else:
                self.store.finish_idempotency(key, answer.to_json(), self.clock(), ttl)
        except StateUnavailable as exc:
            log.error("idempotency key of token %s not recorded: %s", caller.token_id, exc)
        return answer


def _settings(config: Config) -> ApiSettings:
    assert config.api is not None  # SendApi.reload refuses a configuration without [api]
    return config.api


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _idempotency_key(request: Request, caller: tokens.Caller) -> str | None:
    """Scoped by source: two sources never share a key space."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise bad_field("Idempotency-Key", "1-255 printable ASCII characters")
    return f"{caller.source}:{value}"


def _fingerprint(request: Request, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (request.url.path.encode(), request.url.query.encode(), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()
