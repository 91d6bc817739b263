"""The OpenAPI 3.1 description served at /v1/openapi.json (hand-written: three routes)."""

from __future__ import annotations

from typing import Any

MAILBOX = {"type": "string", "examples": ["ERP <erp@example.com>"]}
MAILBOXES = {"oneOf": [MAILBOX, {"type": "array", "items": MAILBOX, "maxItems": 100}]}

MESSAGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["from"],
    "properties": {
        "from": MAILBOX,
        "to": MAILBOXES,
        "cc": MAILBOXES,
        "bcc": {**MAILBOXES, "description": "envelope only: never written as a header"},
        "reply_to": MAILBOXES,
        "subject": {"type": "string"},
        "text": {"type": "string", "description": "text/plain body; give text, html or both"},
        "html": {"type": "string", "description": "text/html body"},
        "headers": {
            "type": "object",
            "description": "custom headers; only names listed in [api] headers",
            "additionalProperties": {"type": "string"},
        },
        "attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["filename", "content"],
                "properties": {
                    "filename": {"type": "string", "minLength": 1},
                    "content_type": {"type": "string", "default": "application/octet-stream"},
                    "content": {"type": "string", "contentEncoding": "base64"},
                },
            },
        },
    },
}

ACCEPTED = {
    "type": "object",
    "required": ["queue_id", "message_id"],
    "properties": {
        "queue_id": {"type": "string", "description": "the Postfix queue id"},
        "message_id": {"type": "string", "examples": ["<170.1.2@example.com>"]},
    },
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "reason"],
            "properties": {
                "status": {"type": "integer"},
                "reason": {"type": "string"},
                "field": {"type": "string", "description": "the request field at fault"},
            },
        }
    },
}

RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry:
        answer["headers"] = RETRY_AFTER
    return answer


RESPONSES = {
    "202": {
        "description": "queued by Postfix after the milter accepted it",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
    },
    "400": _error("a field is invalid (error.field names it)"),
    "401": _error("no token, or a token that is unknown, revoked or expired"),
    "403": _error("refused by policy: disabled source, spoofed sender, content (error.reason)"),
    "409": _error("a request with this Idempotency-Key is still in progress", retry=True),
    "413": _error("the message or request is too large"),
    "422": _error("Idempotency-Key reused with a different request"),
    "429": _error("the source's rate limit", retry=True),
    "502": _error("the relay dropped the connection after the message: outcome unknown"),
    "503": _error("Postfix, a scanner or the state backend is unavailable", retry=True),
}

IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a retry with the same key and body gets the first answer and sends nothing",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "relayguard send API", "version": "1"},
        "security": [{"token": []}],
        "paths": {
            "/v1/messages": {
                "post": {
                    "operationId": "sendMessage",
                    "summary": "Compose a message from JSON and relay it",
                    "parameters": [IDEMPOTENCY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Message"}}
                        },
                    },
                    "responses": RESPONSES,
                }
            },
            "/v1/messages/raw": {
                "post": {
                    "operationId": "sendRawMessage",
                    "summary": "Relay an RFC 5322 message as it is",
                    "parameters": [
                        IDEMPOTENCY,
                        {
                            "name": "mail_from",
                            "in": "query",
                            "description": "envelope sender (default: the From address)",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "rcpt",
                            "in": "query",
                            "description": "envelope recipient, repeatable (default: To and Cc)",
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "style": "form",
                            "explode": True,
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"message/rfc822": {"schema": {"type": "string"}}},
                    },
                    "responses": RESPONSES,
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This description",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `relayguard api token create --source NAME`",
                }
            },
            "schemas": {"Message": MESSAGE, "Accepted": ACCEPTED, "Error": ERROR},
        },
    }
