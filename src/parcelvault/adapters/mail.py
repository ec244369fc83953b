"""Sending e-mail over SMTP, and the one-time code message.

Recipients' addresses are personal: nothing here logs them, and errors are logged
by kind only (an SMTP error's text can quote the address back).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from concurrent.futures import Future, ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import make_msgid
from html import escape

from parcelvault.settings import Settings

log = logging.getLogger("parcelvault.mail")


class MailNotConfigured(RuntimeError):
    """No SMTP server is set (`smtp_host`)."""


def code_message(*, sender: str, to: str, code: str, minutes: int) -> EmailMessage:
    """The message that carries a one-time code, as plain text and HTML."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"Your parcelvault code: {code}"
    message["Message-ID"] = make_msgid(domain="parcelvault.invalid")
    message["Auto-Submitted"] = "auto-generated"
    spaced = f"{code[:3]} {code[3:]}"
    text = (
        "Your code for the parcelvault privacy centre is:\n\n"
        f"    {spaced}\n\n"
        f"It works once, for {minutes} minutes. If you did not ask for it, ignore this\n"
        "message: nobody can use the code without also having this mailbox.\n"
        "We will never ask you for this code by phone or by e-mail.\n"
    )
    message.set_content(text)
    html = (
        "<!doctype html><html lang='en'><body style='font-family:sans-serif'>"
        "<p>Your code for the parcelvault privacy centre is:</p>"
        f"<p style='font-size:1.6em;letter-spacing:0.15em'><strong>{escape(spaced)}</strong></p>"
        f"<p>It works once, for {minutes} minutes. If you did not ask for it, ignore this "
        "message: nobody can use the code without also having this mailbox.</p>"
        "<p>We will never ask you for this code by phone or by e-mail.</p>"
        "</body></html>"
    )
    message.add_alternative(html, subtype="html")
    return message


class SmtpSender:
    """Delivers messages to the configured SMTP server.

    `send` blocks until the server accepted the message. `submit` hands it to a
    small thread pool and returns at once, so a request never waits for the mail
    server (and answers as fast whether or not a message was sent)."""

    def __init__(self, settings: Settings, workers: int = 2) -> None:
        self.settings = settings
        self._pool: ThreadPoolExecutor | None = None
        self._workers = workers

    @property
    def configured(self) -> bool:
        return bool(self.settings.smtp_host)

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self.settings.smtp_ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def send(self, message: EmailMessage) -> None:
        settings = self.settings
        if not settings.smtp_host:
            raise MailNotConfigured("smtp_host is not set")
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
        ) as smtp:
            smtp.ehlo()
            if settings.smtp_starttls:
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if settings.smtp_username:
                password = settings.smtp_password
                smtp.login(settings.smtp_username, password.get_secret_value() if password else "")
            smtp.send_message(message)

    def submit(self, message: EmailMessage, what: str) -> Future[None]:
        """Send in the background; failures are logged as `what` and the error's kind."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="mail")
        future = self._pool.submit(self.send, message)
        future.add_done_callback(lambda done: _report(done, what))
        return future

    def close(self) -> None:
        """Wait for messages still being sent, then stop the pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _report(done: Future[None], what: str) -> None:
    error = done.exception()
    if error is None:
        log.info("mail sent", extra={"mail": what})
        return
    code = getattr(error, "smtp_code", None)
    log.warning(
        "mail could not be sent",
        extra={"mail": what, "error": type(error).__name__, "smtp_code": code},
    )
