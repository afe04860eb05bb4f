"""The built-in email tool against a real SMTP server (aiosmtpd) on the loopback interface."""

from __future__ import annotations

import email
import email.policy
import hashlib
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as Server
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from charter import ToolContext, load_tools, workspace
from charter.builtins.email import message_id, send_email
from charter.errors import PermanentError, RetryableError
from charter.workspace import Workspace, WorkspaceConfig

Use = Callable[..., AbstractContextManager[None]]
CTX = ToolContext("run1", "step1", None, 1, "run1/step1")
PASSWORD = "s3cret-pass-word"
WRONG = "not-the-right-one"


class Inbox:
    """Keeps what the server accepted; refuses recipients whose local part says so."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.data_reply: str | None = None

    async def handle_RCPT(self, server: Server, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        if address.startswith("later@"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Server, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_login(server: Server, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"bot" and data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def auth_inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, authenticator=check_login, auth_require_tls=False)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def use(tmp_path: Path) -> Use:
    """A context that makes the workspace's email settings point at ``port`` (plus any overrides)."""

    @contextmanager
    def settings(port: int | None, **overrides: Any) -> Iterator[None]:
        cfg = {} if port is None else {"email": {"host": "127.0.0.1", "port": port, "from": "Charter Bot <bot@example.org>",
                                                  "tls": "none", "timeout": 5, **overrides}}
        token = workspace.activate(Workspace(tmp_path, WorkspaceConfig.model_validate(cfg)))
        try:
            yield
        finally:
            workspace._current.reset(token)

    return settings


async def test_a_message_arrives_with_the_step_message_id(inbox: tuple[Inbox, int], use: Use) -> None:
    server, port = inbox
    with use(port):
        out = await send_email.invoke({"to": ["Ann Example <ann@example.com>"], "subject": "Weekly report",
                                       "body": "Hello Ann,\nall good.\n", "cc": ["bo@example.com"],
                                       "reply_to": "team@example.org"}, CTX)
        expected_id = f"<{hashlib.sha256(b'run1/step1').hexdigest()[:32]}@example.org>"
        assert out == {"message_id": expected_id, "to": ["Ann Example <ann@example.com>"],
                       "accepted": ["ann@example.com", "bo@example.com"], "refused": {}}
        [envelope] = server.envelopes
        assert envelope.mail_from == "bot@example.org" and envelope.rcpt_tos == ["ann@example.com", "bo@example.com"]
        [msg] = server.messages()
        assert msg["From"] == "Charter Bot <bot@example.org>" and msg["To"] == "Ann Example <ann@example.com>"
        assert msg["Cc"] == "bo@example.com" and msg["Reply-To"] == "team@example.org"
        assert msg["Subject"] == "Weekly report" and msg["Date"]
        assert msg["Message-ID"] == expected_id == message_id("run1/step1", "bot@example.org")
        assert msg["X-Charter-Key"] == "run1/step1"
        assert msg.get_content().replace("\r\n", "\n") == "Hello Ann,\nall good.\n"


async def test_a_repeat_carries_the_same_message_id(inbox: tuple[Inbox, int], use: Use) -> None:
    server, port = inbox
    with use(port):
        args = {"to": ["ann@example.com"], "subject": "Ünïcode subject", "body": "Grüße"}
        first = await send_email.invoke(args, CTX)
        again = await send_email.invoke(args, ToolContext("run1", "step1", None, 2, "run1/step1"))
        other = await send_email.invoke(args, ToolContext("run1", "step2", None, 1, "run1/step2"))
        assert first["message_id"] == again["message_id"] != other["message_id"]
        ids = [m["Message-ID"] for m in server.messages()]
        assert ids == [first["message_id"], first["message_id"], other["message_id"]]
        assert server.messages()[0]["Subject"] == "Ünïcode subject" and server.messages()[0].get_content().strip() == "Grüße"


async def test_login_with_a_password_from_the_environment(
    auth_inbox: tuple[Inbox, int], use: Use, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = auth_inbox
    with use(port, username="bot", password="${env:TEST_SMTP_PASSWORD}"):
        monkeypatch.setenv("TEST_SMTP_PASSWORD", PASSWORD)
        out = await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b"}, CTX)
        assert out["accepted"] == ["ann@example.com"] and len(server.envelopes) == 1

        monkeypatch.setenv("TEST_SMTP_PASSWORD", WRONG)
        with pytest.raises(PermanentError, match="refused the login of 'bot'") as info:
            await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b"}, CTX)
        assert WRONG not in str(info.value) and PASSWORD not in str(info.value)
        assert len(server.envelopes) == 1

        monkeypatch.delenv("TEST_SMTP_PASSWORD")
        with pytest.raises(PermanentError, match="TEST_SMTP_PASSWORD is not set"):
            await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b"}, CTX)


async def test_refused_recipients(inbox: tuple[Inbox, int], use: Use) -> None:
    server, port = inbox
    with use(port):
        with pytest.raises(PermanentError, match=r"refused every recipient: nobody@example\.com: 550 5\.1\.1") as info:
            await send_email.invoke({"to": ["nobody@example.com"], "cc": ["nobody@example.net"], "subject": "s", "body": "b"}, CTX)
        assert "nobody@example.net" in str(info.value)
        with pytest.raises(RetryableError, match=r"refused every recipient for now: later@example\.com: 450"):
            await send_email.invoke({"to": ["later@example.com"], "subject": "s", "body": "b"}, CTX)
        some = await send_email.invoke({"to": ["ann@example.com", "nobody@example.com"], "subject": "s", "body": "b"}, CTX)
        assert some["accepted"] == ["ann@example.com"]
        assert some["refused"] == {"nobody@example.com": "550 5.1.1 no such user here"}
        assert [e.rcpt_tos for e in server.envelopes] == [["ann@example.com"]]


async def test_smtp_reply_codes_decide_retrying(inbox: tuple[Inbox, int], use: Use) -> None:
    server, port = inbox
    with use(port):
        server.data_reply = "451 4.3.0 local problem"
        with pytest.raises(RetryableError, match="answered 451"):
            await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b"}, CTX)
        server.data_reply = "554 5.7.1 message rejected as spam"
        with pytest.raises(PermanentError, match=r"answered 554 5\.7\.1 message rejected as spam"):
            await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b"}, CTX)


async def test_an_unreachable_server_is_retryable(use: Use) -> None:
    # A port bound and released: nobody listens there.
    with use(free_port()), pytest.raises(RetryableError, match=r"cannot reach the SMTP server 127\.0\.0\.1"):
        await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b"}, CTX)


async def test_starttls_required_but_not_offered_is_permanent(inbox: tuple[Inbox, int], use: Use) -> None:
    server, port = inbox
    with use(port, tls="starttls"):
        with pytest.raises(PermanentError, match="STARTTLS"):
            await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b"}, CTX)
        assert server.envelopes == []


@pytest.mark.parametrize(("args", "match"), [
    ({"subject": "Hi\r\nBcc: victim@example.com"}, "the subject contains a line break: refused \\(header injection\\)"),
    ({"to": ["ann@example.com\nBcc: victim@example.com"]}, "header injection"),
    ({"cc": ["bo@example.com\r"]}, "header injection"),
    ({"reply_to": "x@example.com\nX-Evil: 1"}, "header injection"),
    ({"to": ["not-an-address"]}, "'not-an-address' is not an email address"),
    ({"to": ["a@b@example.com"]}, "not an email address"),
    ({"to": ["ann@example.com, eve@example.com"]}, "not an email address"),
    ({"to": []}, "to is empty"),
])
async def test_bad_headers_are_refused_before_connecting(
    inbox: tuple[Inbox, int], use: Use, args: dict[str, Any], match: str
) -> None:
    server, port = inbox
    with use(port):
        with pytest.raises(PermanentError, match=match):
            await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b", **args}, CTX)
        assert server.envelopes == []


async def test_without_email_settings_the_error_says_what_to_add(use: Use) -> None:
    with use(None), pytest.raises(PermanentError, match=r"add an 'email:' section to charter\.yaml with host, port and from"):
        await send_email.invoke({"to": ["ann@example.com"], "subject": "s", "body": "b"}, CTX)


def test_the_module_loads_as_a_write_tool_targeting_its_recipients() -> None:
    registry = load_tools(["charter.builtins.email"])
    tool = registry.get("send_email")
    assert registry.names() == ["send_email"] and tool is not None and tool.effect == "write"
    assert tool.targets_of({"to": ["a@example.com", "b@example.com"]}) == ["a@example.com", "b@example.com"]
