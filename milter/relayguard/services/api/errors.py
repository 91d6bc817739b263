"""The API's typed errors: an HTTP status, the request field at fault (if any) and a reason."""

from __future__ import annotations

from dataclasses import dataclass

from relayguard.core.errors import RelayguardError


@dataclass(eq=False)
class ApiError(RelayguardError):
    """Answered as {"error": {"status", "field", "reason"}}; `retry_after` adds Retry-After.

    Not frozen: contextlib sets `__traceback__` on an exception leaving a `with` block, which a
    frozen dataclass refuses (a TypeError instead of the answer). Compared by identity."""

    status: int
    reason: str
    field: str = ""
    retry_after: int | None = None

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"status": self.status, "reason": self.reason}
        if self.field:
            error["field"] = self.field
        return {"error": error}


def bad_field(field: str, reason: str) -> ApiError:
    return ApiError(400, reason, field)
