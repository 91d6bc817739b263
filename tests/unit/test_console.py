"""The operator console over HTTP (Starlette's TestClient): every page and action, logins and
lock-out, CSRF and roles, the audit trail of each action, and hostile held messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from relayguard.cli.inventory import InventoryView, inventory
from relayguard.cli.report import ReportView, build, format_html
from relayguard.config import load_config
from relayguard.core.audit_record import CheckEntry, DecisionRecord
from relayguard.core.verdict import Action, Mode
from relayguard.dkim.status import DomainStatus, KeyStatus, write_domain
from relayguard.engine.quarantine import Held, QuarantineError
from relayguard.services.console.accounts import Accounts
from relayguard.services.console.app import Console, Extras
from relayguard.services.console.audit_index import AuditIndex
from relayguard.services.console.login_audit import MAX_LINES, LoginAudit
from relayguard.services.console.login_guard import LoginGuard
from relayguard.state.factory import open_store

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"
CONFIG = """
[relay]
mode = "enforce"
audit_log = "{dir}/audit.jsonl"

[state]
path = "{dir}/state.sqlite3"

[console]
accounts_file = "{dir}/console-users.json"
state_directory = "{dir}/console"
login_attempts = 3

[[sources]]
name = "printer"
sasl_users = ["printer-1"]
senders = ["scanner@example.com"]

[[sources]]
name = "erp"
networks = ["192.0.2.0/24"]
senders = ["@erp.example.com"]
"""
HOSTILE = (
    b"From: <script>alert(1)</script> <evil@example.com>\r\n"
    b"Subject: =?x-unknown?B?AAAA?= \xff\xfe broken \x1b[2J\r\n"
    + b"X-Huge: "
    + b"A" * 200_000
    + b"\r\n"
    + b"".join(b"X-Many-%d: v\r\n" % n for n in range(300))
    + b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b'--b\r\nContent-Type: text/html; charset="no-such-charset"\r\n\r\n'
    b'<script>document.cookie</script><img src="http://tracker.invalid/x.png">\xff\xfe\r\n'
    b"--b\r\nContent-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="<b>invoice</b>.exe"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n"
)


@dataclass
class FakeHold:
    """The hold queue's interface with messages in memory (the e2e test uses Postfix's)."""

    messages: dict[str, bytes] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)

    def held(self) -> list[Held]:
        now = int(time.time()) - 600
        return [
            Held(q, now, len(raw), "scanner@example.com", ("alice@example.com",))
            for q, raw in self.messages.items()
        ]

    def message(self, queue_id: str) -> bytes:
        if queue_id not in self.messages:
            raise QuarantineError(f"{queue_id} is not in the hold queue")
        return self.messages[queue_id]

    def release(self, queue_id: str) -> None:
        self.message(queue_id)
        self.released.append(self.messages.pop(queue_id).decode("ascii", "replace")[:10])

    def delete(self, queue_id: str) -> None:
        self.message(queue_id)
        del self.messages[queue_id]


def decision(
    n: int, source: str = "printer", outcome: str = "accept", when: float | None = None
) -> DecisionRecord:
    action = Action.QUARANTINE if outcome == "quarantine" else Action.ACCEPT
    stamp = datetime.fromtimestamp(when or time.time(), UTC).isoformat(timespec="milliseconds")
    return DecisionRecord(
        time=stamp.replace("+00:00", "Z"),
        stage="end",
        mode=Mode.ENFORCE,
        action=action,
        outcome=outcome,
        queue_id=f"4QTEST{n:04d}",
        source=source,
        sasl_user="printer-1",
        mail_from="scanner@example.com",
        recipients=(f"user{n}@customer.test",),
        from_header="Scanner <scanner@example.com>",
        message_id=f"<{n}@example.com>",
        size=1000,
        checks=(
            CheckEntry("sender", Action.ACCEPT),
            CheckEntry("yara", action, "YARA rule markers:Hold_Marker matched" if n else ""),
        ),
    )


def write_lines(path: Path, records: list[DecisionRecord]) -> None:
    with path.open("a", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record.to_json()) + "\n")


@dataclass
class Site:
    client: TestClient
    console: Console
    directory: Path
    hold: FakeHold

    @property
    def audit(self) -> list[dict[str, object]]:
        lines = (self.directory / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def admin(self, event: str) -> list[dict[str, object]]:
        return [r for r in self.audit if r.get("event") == event]

    def login(self, user: str = "alice", password: str = PASSWORD) -> int:
        self.client.cookies.clear()
        csrf = token(self.client.get("/login").text)
        answer = self.client.post(
            "/login", data={"user": user, "password": password, "csrf": csrf},
            follow_redirects=False,
        )  # fmt: skip
        return answer.status_code

    def csrf(self, page: str = "/") -> str:
        return token(self.client.get(page).text)


def token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found[1]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    (tmp_path / "relayguard.toml").write_text(CONFIG.format(dir=tmp_path))
    config = load_config(tmp_path / "relayguard.toml")
    assert config.console is not None
    accounts = Accounts(config.console.accounts_file)
    accounts.add("alice", "operator", PASSWORD)
    accounts.add("victor", "viewer", PASSWORD)
    write_lines(tmp_path / "audit.jsonl", [decision(n) for n in range(60)])
    write_lines(tmp_path / "audit.jsonl", [decision(99, "erp", "quarantine")])
    index = AuditIndex(config.console.index_path, tmp_path / "audit.jsonl")
    index.update()
    hold = FakeHold({"4QHOSTILE1": HOSTILE, "4QPLAIN01": b"Subject: hi\r\n\r\nhello\r\n"})
    extras = Extras(InventoryView, ReportView)
    console = Console(config, config.console, index, extras, hold)  # type: ignore[arg-type]
    with TestClient(console.app(), base_url="http://127.0.0.1") as client:
        yield Site(client, console, tmp_path, hold)
    index.close()


PAGES = ["/", "/sources", "/sources/printer", "/audit", "/quarantine", "/quarantine/4QPLAIN01",
         "/inventory", "/report"]  # fmt: skip


def test_every_page_needs_a_login(site: Site) -> None:
    for page in PAGES:
        answer = site.client.get(page, follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (303, "/login"), page


def test_every_page_renders_with_a_strict_policy_and_no_inline_code(site: Site) -> None:
    assert site.login() == 303
    for page in PAGES:
        answer = site.client.get(page)
        assert answer.status_code == 200, page
        policy = answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        if page == "/report":  # the self-contained report: inline CSS, no script at all
            assert "script-src" not in policy and policy.startswith("default-src 'none'")
            continue
        assert policy.startswith("default-src 'self'; script-src 'self'; style-src 'self'")
        assert "<script" not in answer.text and " style=" not in answer.text, page
        assert "http://" not in answer.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    css = site.client.get("/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_session_cookie_is_httponly_strict_and_signed(site: Site) -> None:
    csrf_page = site.client.get("/login")
    cookie = csrf_page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    site.login()
    value = site.client.cookies["relayguard-console"]
    site.client.cookies.set(
        "relayguard-console", value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
    )
    assert site.client.get("/", follow_redirects=False).status_code == 303  # forged: no session


def test_secure_cookie_when_the_console_speaks_tls(site: Site) -> None:
    from relayguard.services.console.web import Session, Sessions

    sessions = Sessions(b"k" * 32, 60, secure=True)
    from starlette.responses import Response

    response = Response()
    sessions.write(response, Session("t", "alice", "operator", "fp"))
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-relayguard-console=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_wrong_passwords_lock_the_account_even_for_the_right_one(site: Site) -> None:
    for _ in range(3):
        assert site.login("alice", "wrong password!!") == 401
    assert site.login("alice", PASSWORD) == 429
    assert site.admin("console_lockout")[0]["user"] == "alice"
    assert site.admin("console_login") == []


def test_each_failed_login_is_audited_with_the_name_typed_never_the_password(site: Site) -> None:
    secret = "Tr0ub4dor&3-typed-by-mistake"
    assert site.login("alice", secret) == 401
    typed = "mallory\n" + "x" * 300
    assert site.login(typed, secret) == 401
    failed = site.admin("console_login_failed")
    assert (failed[0]["user"], failed[0]["client"], failed[0]["reason"]) == (
        "alice", "testclient", "wrong name or password",
    )  # fmt: skip
    user = str(failed[1]["user"])
    assert user.startswith("mallory\\n" + "x" * 55) and "[clipped" in user and "\n" not in user
    assert secret not in (site.directory / "audit.jsonl").read_text()
    assert site.login("alice", secret) == 401  # the third: alice is locked out
    assert site.login("alice", PASSWORD) == 429  # refused while locked: counted, not a line
    reasons = [f["reason"] for f in site.admin("console_login_failed")]
    assert reasons == ["wrong name or password"] * 3
    lockout = site.admin("console_lockout")
    assert [(r["user"], r["client"], r["attempts"]) for r in lockout] == [
        ("alice", "testclient", "3")
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_clock(site: Site, budget: int = MAX_LINES) -> FakeClock:
    """The login limits and their audit on a clock the test moves (as configured: 3 tries)."""
    clock = FakeClock()
    site.console.guard = LoginGuard(3, 300, 900, clock)
    site.console.login_audit = LoginAudit(300, budget, clock)
    return clock


def failed_login_lines(site: Site) -> list[dict[str, object]]:
    events = ("console_login_failed", "console_lockout", "console_login_refused")
    return [r for r in site.audit if r.get("event") in events]


def post_logins(client: TestClient, count: int, user: str, password: str) -> list[int]:
    """`count` login attempts with one form token (a refused login keeps the session)."""
    client.cookies.clear()
    csrf = token(client.get("/login").text)
    return [
        client.post(
            "/login", data={"user": user, "password": password, "csrf": csrf},
            follow_redirects=False,
        ).status_code
        for _ in range(count)
    ]  # fmt: skip


def test_a_burst_of_failed_logins_writes_a_few_lines_that_say_what_happened(site: Site) -> None:
    clock = with_clock(site)
    secret = "guess-number-500"
    codes = post_logins(site.client, 500, "alice", secret)
    assert codes == [401] * 3 + [429] * 497
    lines = failed_login_lines(site)
    assert [(r["event"], r["user"], r["client"]) for r in lines] == [
        ("console_login_failed", "alice", "testclient"),
    ] * 3 + [("console_lockout", "alice", "testclient")]
    assert lines[3]["attempts"] == "3"
    clock.now += 901  # the lock-out and the window are over: the next login carries the count
    assert site.login() == 303
    summary = site.admin("console_login_refused")
    assert len(summary) == 1 and summary[0]["refused_while_locked"] == "497"
    assert summary[0]["clients"] == "testclient x497" and summary[0]["users"] == "alice x497"
    assert str(summary[0]["reason"]).startswith("497 attempts refused while locked out")
    assert len(failed_login_lines(site)) == 5
    assert secret not in (site.directory / "audit.jsonl").read_text()


def test_rotating_names_and_addresses_meets_a_cap_and_one_summary(site: Site) -> None:
    clock = with_clock(site, budget=6)
    app = site.client.app
    for n in range(12):  # each from its own loopback address, at its own name: nothing locks
        client = TestClient(app, base_url="http://127.0.0.1", client=(f"127.0.0.{n + 1}", 5000))
        assert post_logins(client, 1, f"guess{n}", "wrong password!!") == [401]
    lines = failed_login_lines(site)
    assert [r["user"] for r in lines] == [f"guess{n}" for n in range(6)]
    clock.now += 301
    assert site.login() == 303
    (summary,) = site.admin("console_login_refused")
    assert (summary["failed_unaudited"], summary["refused_while_locked"]) == ("6", "0")
    assert summary["clients"] == ", ".join(f"127.0.0.{n + 1} x1" for n in range(6, 12))


def test_the_summary_of_refused_logins_is_written_at_shutdown(tmp_path: Path) -> None:
    (tmp_path / "relayguard.toml").write_text(CONFIG.format(dir=tmp_path))
    config = load_config(tmp_path / "relayguard.toml")
    assert config.console is not None
    console = Console(config, config.console, None, hold=FakeHold({}))  # type: ignore[arg-type]
    with TestClient(console.app(), base_url="http://127.0.0.1") as client:
        assert post_logins(client, 10, "mallory", "wrong password!!") == [401] * 3 + [429] * 7
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["console_login_failed"] * 3 + [
        "console_lockout", "console_login_refused",
    ]  # fmt: skip
    assert lines[-1]["refused_while_locked"] == "7" and lines[-1]["users"] == "mallory x7"


def test_login_without_the_form_token_is_refused(site: Site) -> None:
    site.client.get("/login")
    answer = site.client.post("/login", data={"user": "alice", "password": PASSWORD})
    assert answer.status_code == 403


def test_login_and_logout_are_audited(site: Site) -> None:
    assert site.login() == 303
    assert site.admin("console_login")[0]["actor"] == "console:alice"
    answer = site.client.post("/logout", data={"csrf": site.csrf()}, follow_redirects=False)
    assert answer.status_code == 303
    assert site.client.get("/", follow_redirects=False).status_code == 303
    assert site.admin("console_logout")[0]["actor"] == "console:alice"


def disabled(site: Site) -> list[str]:
    assert site.console.config.state is not None
    store = open_store(site.console.config.state)
    try:
        return [d.source for d in store.all_disabled()]
    finally:
        store.close()


def test_kill_switch_without_the_csrf_token_does_nothing(site: Site) -> None:
    site.login()
    answer = site.client.post(
        "/sources/printer/disable", data={"reason": "x", "confirm": "yes", "csrf": "forged"}
    )
    assert answer.status_code == 403
    assert disabled(site) == []


def test_a_viewer_cannot_act(site: Site) -> None:
    site.login("victor")
    csrf = site.csrf("/sources/printer")
    assert "Kill switch" not in site.client.get("/sources/printer").text
    for path, data in (
        ("/sources/printer/disable", {"reason": "x", "confirm": "yes"}),
        ("/quarantine/4QPLAIN01/release", {"confirm": "yes"}),
        ("/quarantine/4QPLAIN01/delete", {"confirm": "yes"}),
    ):
        answer = site.client.post(path, data={**data, "csrf": csrf})
        assert answer.status_code == 403, path
    assert disabled(site) == [] and "4QPLAIN01" in site.hold.messages


def test_kill_switch_needs_a_reason_and_a_confirmation_and_is_audited(site: Site) -> None:
    site.login()
    csrf = site.csrf("/sources/printer")
    refused = site.client.post("/sources/printer/disable", data={"reason": "stolen", "csrf": csrf})
    assert refused.status_code == 400 and disabled(site) == []
    refused = site.client.post(
        "/sources/printer/disable", data={"reason": "  ", "confirm": "yes", "csrf": csrf}
    )
    assert refused.status_code == 400 and disabled(site) == []
    done = site.client.post(
        "/sources/printer/disable",
        data={"reason": "device stolen\n<b>ticket</b> 4711", "confirm": "yes", "csrf": csrf},
    )
    assert done.status_code == 200 and "The source is disabled" in done.text
    assert "device stolen &lt;b&gt;ticket&lt;/b&gt; 4711" in done.text
    assert disabled(site) == ["printer"]
    line = site.admin("source_disabled")[0]
    assert (line["actor"], line["source"], line["reason"]) == (
        "console:alice", "printer", "device stolen <b>ticket</b> 4711",
    )  # fmt: skip
    assert "printer" in site.client.get("/").text  # the overview lists it as disabled
    site.client.post("/sources/printer/enable", data={"confirm": "yes", "csrf": csrf})
    assert disabled(site) == []
    assert site.admin("source_enabled")[0]["actor"] == "console:alice"


def test_unknown_source_is_a_404_not_an_error(site: Site) -> None:
    site.login()
    assert site.client.get("/sources/nope").status_code == 404
    answer = site.client.post(
        "/sources/nope/disable", data={"reason": "r", "confirm": "yes", "csrf": site.csrf()}
    )
    assert answer.status_code == 404 and disabled(site) == []


def test_audit_search_filters_and_pages(site: Site) -> None:
    site.login()
    by_queue = site.client.get("/audit", params={"queue_id": "4QTEST0007"}).text
    assert "user7@customer.test" in by_queue and "user8@customer.test" not in by_queue
    quarantined = site.client.get("/audit", params={"outcome": "quarantine"}).text
    assert "4QTEST0099" in quarantined and "4QTEST0001" not in quarantined
    by_check = site.client.get("/audit", params={"check": "yara", "source": "erp"}).text
    assert "4QTEST0099" in by_check
    first = site.client.get("/audit", params={"recipient": "customer.test"}).text
    assert first.count("<tr class=") == 50
    older = re.search(r'href="(/audit\?[^"]+)" rel="next"', first)
    assert older is not None
    second = site.client.get(older[1].replace("&amp;", "&")).text
    assert second.count("<tr class=") == 11 and 'rel="next"' not in second
    assert "Times are ISO 8601" in site.client.get("/audit", params={"since": "yesterday"}).text


def test_the_index_follows_new_lines(site: Site) -> None:
    site.login()
    write_lines(site.directory / "audit.jsonl", [decision(1234)])
    assert site.console.index is not None
    site.console.index.update()  # the follower thread does this every index_interval
    assert (
        "user1234@customer.test"
        in site.client.get("/audit", params={"queue_id": "4QTEST1234"}).text
    )


def test_inventory_and_report_are_the_cli_s_own_output_folded_from_the_index(site: Site) -> None:
    log = site.directory / "audit.jsonl"
    assert site.console.digests is not None
    assert site.console.digests.render("inventory") == inventory(log)
    assert site.console.digests.render("report") == format_html(build(log))


def test_the_follower_folds_one_batch_per_tick_and_a_page_the_rest(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relayguard.services.console import digests

    monkeypatch.setattr(digests, "BATCH", 20)
    assert site.console.digests is not None
    fresh = digests.Digests(site.console.digests.index, {"inventory": InventoryView(Path("x"))})
    assert fresh.refresh_one_batch() == 20  # a tick never folds a whole backlog
    assert fresh.refresh() == 41 and fresh.refresh() == 0
    assert "61 decision(s)" in fresh.render("inventory")


def test_inventory_and_report_pages_come_from_the_index_not_the_log(site: Site) -> None:
    site.login()
    log = site.directory / "audit.jsonl"
    log.rename(site.directory / "audit.jsonl.1")  # rotated: the log itself is empty now
    log.touch()
    assert "printer-1" in site.client.get("/inventory").text
    assert ">61<" in site.client.get("/report").text.replace(" ", "")  # decisions counted
    newcomer = replace(decision(5000), sasl_user="newcomer-7", queue_id="4QNEW00001")
    write_lines(log, [newcomer])
    assert "newcomer-7" not in site.client.get("/inventory").text
    assert site.console.index is not None
    site.console.index.update()  # the follower thread does this, then refreshes the digests
    page = site.client.get("/inventory").text
    assert "newcomer-7" in page and "printer-1" in page and "62 decision(s)" in page
    assert ">62<" in site.client.get("/report").text.replace(" ", "")


def test_hostile_held_message_is_shown_escaped_and_bounded(site: Site) -> None:
    site.login()
    page = site.client.get("/quarantine/4QHOSTILE1")
    assert page.status_code == 200
    text = page.text
    assert "<script" not in text and "<img" not in text and "<b>invoice" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;script&gt;document.cookie&lt;/script&gt;" in text  # the HTML part, as source
    assert "&lt;b&gt;invoice&lt;/b&gt;.exe" in text  # the attachment listed, not opened
    assert "\\x1b[2J" in text and "\x1b" not in text
    assert "A" * 2001 not in text  # the huge header is cut
    assert "more header fields, not shown" in text
    assert len(text) < 200_000


def test_quarantine_release_and_delete_are_confirmed_and_audited(site: Site) -> None:
    site.login()
    listing = site.client.get("/quarantine").text
    assert "4QHOSTILE1" in listing and "4QPLAIN01" in listing
    csrf = site.csrf("/quarantine/4QPLAIN01")
    unconfirmed = site.client.post("/quarantine/4QPLAIN01/release", data={"csrf": csrf})
    assert unconfirmed.status_code == 400 and "4QPLAIN01" in site.hold.messages
    released = site.client.post(
        "/quarantine/4QPLAIN01/release", data={"csrf": csrf, "confirm": "yes"}
    )
    assert released.status_code == 200 and "released for delivery" in released.text
    assert site.hold.released == ["Subject: h"]
    deleted = site.client.post(
        "/quarantine/4QHOSTILE1/delete", data={"csrf": csrf, "confirm": "yes"}
    )
    assert deleted.status_code == 200 and site.hold.messages == {}
    events = [(r["event"], r["queue_id"], r["actor"]) for r in site.audit if "queue_id" in r
              and r.get("stage") == "admin"]  # fmt: skip
    assert events == [
        ("quarantine_released", "4QPLAIN01", "console:alice"),
        ("quarantine_deleted", "4QHOSTILE1", "console:alice"),
    ]
    gone = site.client.post("/quarantine/4QPLAIN01/delete", data={"csrf": csrf, "confirm": "yes"})
    assert gone.status_code == 400


def test_changing_the_password_ends_the_session(site: Site) -> None:
    site.login()
    assert site.client.get("/", follow_redirects=False).status_code == 200
    site.console.accounts.passwd("alice", "another long password")
    assert site.client.get("/", follow_redirects=False).status_code == 303


def test_overview_counts_and_plots_the_last_day(site: Site) -> None:
    site.login()
    page = site.client.get("/").text
    assert re.search(r"<th>last 24 h</th><td>60</td><td>0</td><td>0</td><td>1</td>", page)
    assert 'class="bar-delivered"' in page and "<svg" in page


def with_dkim_status_file(site: Site, path: Path) -> None:
    config = site.console.config
    site.console.config = replace(config, metrics=replace(config.metrics, dkim_status_file=path))


def test_overview_shows_the_last_dkim_dns_check_and_marks_a_mismatch(site: Site) -> None:
    status_file = site.directory / "dkim-status.json"
    keys = (
        KeyStatus("rsa2026", "rsa", "active", 1733000000.0, 1),
        KeyStatus("<img src=x>", "ed25519", "pending", 1764000000.0, 0),
    )
    write_domain(status_file, DomainStatus("example.com", 1764500000.0, keys))
    with_dkim_status_file(site, status_file)
    site.login()
    page = site.client.get("/").text
    match = re.search(r"<tr><td>example\.com</td><td>rsa2026</td><td>rsa</td><td>active</td>"
                      r"<td>2024-11-30</td><td><span class=\"badge on\">match</span></td>"
                      r"<td>2025-11-30 10:53:20</td></tr>",
                      page)  # fmt: skip
    assert match, page
    assert "<img src=x>" not in page and "&lt;img src=x&gt;" in page
    assert '<span class="badge off">MISMATCH</span>' in page


def test_overview_without_a_dkim_status_file_says_so(site: Site) -> None:
    site.login()
    assert "no verify-dns result" in site.client.get("/").text
    with_dkim_status_file(site, site.directory / "missing.json")
    assert "no verify-dns result" in site.client.get("/").text
    (site.directory / "garbage.json").write_text("{not json")
    with_dkim_status_file(site, site.directory / "garbage.json")
    answer = site.client.get("/")
    assert answer.status_code == 200 and "no verify-dns result" in answer.text


def test_console_user_commands_read_the_password_from_stdin_never_argv(tmp_path: Path) -> None:
    (tmp_path / "relayguard.toml").write_text(CONFIG.format(dir=tmp_path))
    command = [sys.executable, "-m", "relayguard.cli", "console", "user", "add", "bob",
               "--role", "operator", "--config", str(tmp_path / "relayguard.toml")]  # fmt: skip
    added = subprocess.run(command, input="a long enough password\n", capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
    assert added.returncode == 0, added.stderr
    users = tmp_path / "console-users.json"
    assert oct(os.stat(users).st_mode & 0o777) == "0o600"
    assert "a long enough password" not in users.read_text()
    account = Accounts(users).verify("bob", "a long enough password")
    assert account is not None and account.role == "operator"
    short = subprocess.run([*command[:6], "carol", *command[7:]], input="short\n",
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    removed = subprocess.run([*command[:5], "remove", "bob", *command[9:]], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert removed.returncode == 0 and Accounts(users).get("bob") is None
    events = [
        json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()
    ]
    assert events == ["console_user_added", "console_user_removed"]
