"""Which failed console logins become audit lines (services/console/login_audit.py): bounded per
window across every client and name, with one summary that still says who and how many."""

from __future__ import annotations

import pytest

from relayguard.services.console.login_audit import MAX_NAMED, LoginAudit

pytestmark = pytest.mark.unit


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failures_are_lines_until_the_budget_then_one_summary_per_window() -> None:
    clock = Clock()
    audit = LoginAudit(60, budget=4, clock=clock)
    lines = [line for n in range(1000) for line in audit.failed(f"u{n}", f"c{n}", False, 3)]
    assert [line.details["user"] for line in lines] == ["u0", "u1", "u2", "u3"]
    assert audit.due() == []  # the window is not over
    clock.now = 60
    (summary,) = audit.due()
    assert summary.event == "console_login_refused"
    assert summary.details["failed_unaudited"] == "996"
    named = summary.details["clients"].split(", ")
    assert len(named) == MAX_NAMED and named[0] == "c4 x1"
    assert summary.details["clients"].endswith(f"(+{996 - MAX_NAMED} from others)")
    assert audit.due() == []  # a new window: nothing counted yet


def test_a_lockout_past_the_budget_is_counted_and_refusals_are_never_lines() -> None:
    clock = Clock()
    audit = LoginAudit(60, budget=1, clock=clock)
    assert [line.event for line in audit.failed("alice", "c", True, 3)] == ["console_login_failed"]
    assert all(audit.refused("alice", "c") == [] for _ in range(50))
    (summary,) = audit.flush()
    assert (summary.details["lockouts_unaudited"], summary.details["refused_while_locked"]) == (
        "1", "50",
    )  # fmt: skip
    assert summary.details["users"] == "alice x51"
    assert audit.flush() == []
