"""Sending email through the SMTP server set in ``charter.yaml``::

    email:
      host: smtp.example.com
      port: 587
      from: Charter <charter@example.com>
      username: charter@example.com
      password: ${env:SMTP_PASSWORD}
      tls: starttls            # none | starttls | tls

A repeat is harmless to the reader: every attempt of one step sends the same
``Message-ID``, derived from the idempotency key (see :func:`message_id`), and
an ``X-Charter-Key`` header, so mail systems and clients that deduplicate on
the Message-ID show the message once, and the effect ledger can tell which
message a step sent. SMTP itself cannot be asked whether a message was
delivered, so a step that died after the server accepted its message sends it
again, with the same Message-ID.

Load with ``--tools charter.builtins.email``.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any

import aiosmtplib

from ..errors import PermanentError, RetryableError
from ..tools import ToolContext, tool
from ..workspace import EmailConfig, Workspace, current

_NAMED = re.compile(r"^(?P<name>[^<>]*)<(?P<addr>[^<>]*)>$")
_NOT_IN_ADDRESS = set(" \t,;:<>()[]\\\"")


def message_id(idempotency_key: str, sender: str) -> str:
    """The Message-ID every attempt of the step with ``idempotency_key`` sends from ``sender``'s domain."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{sender.rpartition('@')[2].lower()}>"


def _one_line(value: str, what: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise PermanentError(f"{what} contains a line break: refused (header injection)")
    return value


def _address(value: str, what: str) -> tuple[str, str]:
    """``addr`` or ``Name <addr>`` as (name, addr), or a :class:`PermanentError`."""
    m = _NAMED.match(_one_line(value, what).strip())
    name, addr = (m["name"].strip().strip('"'), m["addr"].strip()) if m else ("", value.strip())
    local, _, domain = addr.partition("@")
    if addr.count("@") != 1 or not local or not domain or _NOT_IN_ADDRESS & set(addr):
        raise PermanentError(f"{what}: {value!r} is not an email address")
    return name, addr


def _settings(ws: Workspace) -> EmailConfig:
    if ws.config.email is None:
        raise PermanentError(
            "email is not configured: add an 'email:' section to charter.yaml with host, port and from "
            "(and username and password if the server asks for them)"
        )
    return ws.config.email


@tool(effect="write", target=("to", "cc"))
async def send_email(
    to: list[str], subject: str, body: str, ctx: ToolContext, cc: list[str] | None = None, reply_to: str | None = None
) -> dict[str, Any]:
    """Send a plain-text email from the configured sender. Every attempt of one step sends the same Message-ID.

    Returns the Message-ID, the recipients the server accepted, and those it refused (when others were accepted).
    """
    ws = current()
    cfg = _settings(ws)
    if not to:
        raise PermanentError("to is empty: give at least one recipient")
    sender_name, sender = _address(cfg.sender, "email.from in charter.yaml")
    recipients = [_address(a, "to") for a in to]
    copies = [_address(a, "cc") for a in cc or []]
    key = _one_line(ctx.idempotency_key, "the idempotency key")
    msg = EmailMessage()
    msg["From"] = formataddr((sender_name, sender))
    msg["To"] = ", ".join(formataddr(r) for r in recipients)
    if copies:
        msg["Cc"] = ", ".join(formataddr(c) for c in copies)
    if reply_to is not None:
        msg["Reply-To"] = formataddr(_address(reply_to, "reply_to"))
    msg["Subject"] = _one_line(subject, "the subject")
    msg["Date"] = formatdate(usegmt=True)
    mid = msg["Message-ID"] = message_id(key, sender)
    msg["X-Charter-Key"] = key
    msg.set_content(body)
    envelope = list(dict.fromkeys(addr for _, addr in recipients + copies))
    refused = await _deliver(ws, cfg, msg, sender, envelope)
    accepted = [a for a in envelope if a not in refused]
    return {"message_id": mid, "to": to, "accepted": accepted, "refused": refused}


async def _deliver(
    ws: Workspace, cfg: EmailConfig, msg: EmailMessage, sender: str, recipients: list[str]
) -> dict[str, str]:
    """Send ``msg``; the recipients the server refused (when it accepted some), with its reasons."""
    password = ws.secret(cfg.password, "email.password") if cfg.username is not None else None
    if cfg.username is not None and password is None:
        raise PermanentError("email.username is set in charter.yaml but email.password is not")
    where = f"the SMTP server {cfg.host}:{cfg.port}"
    smtp = aiosmtplib.SMTP(
        hostname=cfg.host, port=cfg.port, timeout=cfg.timeout,
        use_tls=cfg.tls == "tls", start_tls=cfg.tls == "starttls",  # never upgrade by surprise under tls: none
    )
    try:
        await smtp.connect()
        if cfg.username is not None:
            await smtp.login(cfg.username, password or "")
        refused, _ = await smtp.send_message(msg, sender=sender, recipients=recipients)
    except aiosmtplib.SMTPException as exc:
        smtp.close()
        raise _failure(exc, where, cfg.username) from None
    except ssl.SSLError as exc:
        smtp.close()
        raise PermanentError(f"TLS with {where} failed ({exc}); check email.tls and email.port") from None
    except BaseException:
        smtp.close()
        raise
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()  # the message is accepted: a lost goodbye must not fail the step and send it again
    return {addr: f"{r.code} {r.message}" for addr, r in refused.items()}


def _failure(exc: aiosmtplib.SMTPException, where: str, username: str | None) -> Exception:
    """The error a failed SMTP exchange ends the attempt with: 4xx and network trouble retry, the rest do not."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        reasons = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if all(400 <= r.code < 500 for r in exc.recipients):
            return RetryableError(f"{where} refused every recipient for now: {reasons}")
        return PermanentError(f"{where} refused every recipient: {reasons}")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # Only the code: the reply is not ours to trust with the password, which must never be shown.
        text = f"{where} refused the login of {username!r} (code {exc.code}); check email.username and email.password"
        return RetryableError(text) if 400 <= exc.code < 500 else PermanentError(text)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"{where} answered {exc.code} {exc.message}"
        return RetryableError(text) if 400 <= exc.code < 500 else PermanentError(text)
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPServerDisconnected):
        if isinstance(exc.__cause__, ssl.SSLError):
            return PermanentError(f"TLS with {where} failed ({exc.__cause__}); check email.tls and email.port")
        return RetryableError(f"cannot reach {where}: {exc}")
    return PermanentError(f"{where}: {exc}")  # say, STARTTLS or AUTH not offered
