"""One-click unsubscribe tokens, the header transform and the suppression commands."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relayguard import cli
from relayguard.checks import Subject
from relayguard.checks.suppression import Suppression
from relayguard.config import Config, load_config
from relayguard.core.errors import ConfigError
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.verdict import Action, Decision, Mode
from relayguard.engine import registry
from relayguard.state.sqlite import SqliteStore
from relayguard.transforms import unsubscribe

pytestmark = pytest.mark.unit

CONFIG = """
[state]
path = "{state}"
[unsubscribe]
sources = ["newsletter"]
base_url = "https://relay.example.com/"
secrets = ["new-secret-0123456789"{old}]
[[sources]]
name = "newsletter"
sasl_users = ["news"]
senders = ["news@example.com"]
"""

TARGET = unsubscribe.Target("newsletter", "weekly.example.com", "Bob@Example.com")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state.sqlite3", old=""))
    return load_config(path)


def test_token_round_trip_and_rotation() -> None:
    old = unsubscribe.make_token(TARGET, "old-secret-0123456789")
    new = unsubscribe.make_token(TARGET, "new-secret-0123456789")
    both = ("new-secret-0123456789", "old-secret-0123456789")
    expected = unsubscribe.Target("newsletter", "weekly.example.com", "bob@example.com")
    assert unsubscribe.read_token(new, both) == expected
    assert unsubscribe.read_token(old, both) == expected  # the old secret, during its grace
    with pytest.raises(unsubscribe.BadToken, match="not signed by this relay"):
        unsubscribe.read_token(old, both[:1])  # after the old secret was removed


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "YQ.YQ"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(unsubscribe.BadToken):
        unsubscribe.read_token(token, ("new-secret-0123456789",))


def test_forged_target_fails_the_mac() -> None:
    token = unsubscribe.make_token(TARGET, "new-secret-0123456789")
    other = unsubscribe.make_token(
        unsubscribe.Target("newsletter", "weekly.example.com", "eve@example.com"), "guess"
    )
    forged = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(unsubscribe.BadToken):
        unsubscribe.read_token(forged, ("new-secret-0123456789",))


def subject_for(config: Config, recipients: tuple[str, ...], extra: bytes = b"") -> Subject:
    raw = b"From: news@example.com\r\n" + extra + b"Subject: s\r\n\r\nbody\r\n"
    envelope = Envelope(Client(sasl_user="news"), "news@example.com", recipients)
    return Subject(config, config.sources[0], envelope, message=message_from_bytes(raw, envelope))


def test_headers_added_for_one_recipient_with_the_list_scope(config: Config) -> None:
    subject = subject_for(config, ("bob@example.com",), b"List-Id: Weekly <weekly.example.com>\r\n")
    decision = unsubscribe.add_headers(
        subject, Decision(Action.ACCEPT, Action.ACCEPT, Mode.ENFORCE, ())
    )
    (name, value), post = decision.headers
    assert name == "List-Unsubscribe" and value.startswith("<https://relay.example.com/u/")
    assert post == ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    token = value[len("<https://relay.example.com/u/") : -1]
    target = unsubscribe.read_token(token, config.unsubscribe.secrets)  # type: ignore[union-attr]
    assert target.scope == "newsletter/weekly.example.com"


def test_several_recipients_get_no_header_and_say_why(config: Config) -> None:
    subject = subject_for(config, ("a@example.com", "b@example.com"))
    decision = unsubscribe.add_headers(
        subject, Decision(Action.ACCEPT, Action.ACCEPT, Mode.MONITOR, ())
    )
    assert decision.headers == ()
    assert decision.verdicts[-1].reason.startswith("no List-Unsubscribe: 2 recipients")


def test_unsubscribe_transform_runs_before_signing() -> None:
    names = [factory.__module__ for factory in registry.TRANSFORMS]
    assert names.index("relayguard.transforms.unsubscribe") < names.index(
        "relayguard.transforms.signing"
    )
    assert names[-1] == "relayguard.transforms.signing"


def test_rcpt_check_refuses_suppressed_and_second_recipients(
    config: Config, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "state.sqlite3")
    check = Suppression(store, frozenset({"newsletter"}))
    store.suppress("newsletter", "bob@example.com", "one-click", time.time())
    first = Subject(
        config, config.sources[0], Envelope(Client(), "n@example.com"), "Bob@example.com"
    )
    assert check.at_rcpt(first).action is Action.REJECT
    second = Subject(
        config, config.sources[0], Envelope(Client(), "n@example.com", ("a@example.com",)),
        "c@example.com",
    )  # fmt: skip
    verdict = check.at_rcpt(second)
    assert verdict.action is Action.TEMPFAIL and verdict.smtp_reply is not None
    assert (verdict.smtp_reply.code, verdict.smtp_reply.status) == ("452", "4.5.3")


def test_list_scoped_suppression_refuses_at_end_of_data(config: Config, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite3")
    store.suppress("newsletter/weekly.example.com", "bob@example.com", "one-click", time.time())
    check = Suppression(store, frozenset({"newsletter"}))
    weekly = subject_for(config, ("bob@example.com",), b"List-Id: <weekly.example.com>\r\n")
    daily = subject_for(config, ("bob@example.com",), b"List-Id: <daily.example.com>\r\n")
    assert check.at_end(weekly).action is Action.REJECT
    assert check.at_end(daily).action is Action.ACCEPT


def test_suppression_commands(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(config.path)
    assert cli.main(["suppression", "add", "--config", path, "--scope", "newsletter",
                     "Bob@Example.com"]) == 0  # fmt: skip
    assert cli.main(["suppression", "add", "--config", path, "--scope", "newsletter",
                     "bob@example.com"]) == 0  # fmt: skip
    assert "already suppressed" in capsys.readouterr().out
    assert cli.main(["suppression", "list", "--config", path]) == 0
    assert capsys.readouterr().out.startswith("newsletter\tbob@example.com\t")
    assert cli.main(["suppression", "export", "--config", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "scope,recipient,reason,since" and lines[1].startswith(
        "newsletter,bob@example.com,added by an administrator,"
    )
    assert cli.main(["suppression", "remove", "--config", path, "--scope", "newsletter",
                     "bob@example.com"]) == 0  # fmt: skip
    assert cli.main(["suppression", "remove", "--config", path, "--scope", "newsletter",
                     "bob@example.com"]) == 1  # fmt: skip
    capsys.readouterr()
    assert cli.main(["suppression", "list", "--config", path, "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_unsubscribe_without_state_or_with_bad_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relayguard.toml"
    text = CONFIG.format(state="x", old="").split("[unsubscribe]", 1)[1]
    path.write_text(
        "[unsubscribe]"
        + text.replace("https://relay.example.com/", "http://relay.example.com/").replace(
            '"new-secret-0123456789"', '"short"'
        )
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    problems = "\n".join(error.value.problems)
    assert "unsubscribe: needs a [state] section" in problems
    assert "unsubscribe.base_url: must be an https:// URL" in problems
    assert "unsubscribe.secrets: give at least one secret of 16 or more characters" in problems
