"""Sending mail through a real SMTP server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from parcelvault.adapters.mail import MailNotConfigured, SmtpSender, code_message
from parcelvault.settings import Settings
from tests.mailbox import running_mailbox


def test_the_code_message_arrives_over_starttls_after_logging_in(tmp_path: Path) -> None:
    with running_mailbox(tmp_path, tls=True, credentials=("mailer", "s3cret")) as mailbox:
        settings = Settings(**mailbox.settings(), smtp_username="mailer", smtp_password="s3cret")
        message = code_message(
            sender=settings.mail_from, to="someone@example.org", code="123456", minutes=10
        )
        SmtpSender(settings).send(message)
        [received] = mailbox.wait_for(1)
    assert received.envelope_to == ["someone@example.org"]
    assert mailbox.tls_seen == [True]
    assert mailbox.logins == ["mailer"]
    assert received.code() == "123456"
    assert "123 456" in received.html()
    assert "10 minutes" in received.text()
    assert received.message["Subject"] == "Your parcelvault code: 123456"


def test_a_wrong_password_is_refused_by_the_server(tmp_path: Path) -> None:
    import smtplib

    with running_mailbox(tmp_path, tls=True, credentials=("mailer", "s3cret")) as mailbox:
        settings = Settings(
            **mailbox.settings(),
            smtp_username="mailer",
            smtp_password="wrong",
            smtp_timeout_seconds=2,
        )
        message = code_message(sender=settings.mail_from, to="a@example.org", code="1", minutes=1)
        with pytest.raises(smtplib.SMTPException):
            SmtpSender(settings).send(message)
        assert mailbox.received == []


def test_starttls_refuses_a_server_whose_certificate_is_not_trusted(tmp_path: Path) -> None:
    import ssl

    with running_mailbox(tmp_path, tls=True) as mailbox:
        settings = Settings(**{**mailbox.settings(), "smtp_ca_file": None})
        message = code_message(sender=settings.mail_from, to="a@example.org", code="1", minutes=1)
        with pytest.raises(ssl.SSLCertVerificationError):
            SmtpSender(settings).send(message)
        assert mailbox.received == []


def test_sending_without_a_mail_server_set_raises_not_configured() -> None:
    sender = SmtpSender(Settings(smtp_host=None))
    assert not sender.configured
    message = code_message(sender="a@example.org", to="b@example.org", code="1", minutes=1)
    with pytest.raises(MailNotConfigured):
        sender.send(message)


def test_a_failed_background_send_is_logged_without_the_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.e2e.server import free_port

    sender = SmtpSender(Settings(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_starttls=False))
    message = code_message(
        sender="a@example.org", to="hidden-person@example.org", code="654321", minutes=1
    )
    with caplog.at_level("INFO", logger="parcelvault.mail"):
        future = sender.submit(message, "one-time code")
        with pytest.raises(ConnectionRefusedError):
            future.result(timeout=10)
        sender.close()
    [record] = [r for r in caplog.records if r.name == "parcelvault.mail"]
    assert record.getMessage() == "mail could not be sent"
    assert record.__dict__["error"] == "ConnectionRefusedError"
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "hidden-person" not in text
    assert "654321" not in text
