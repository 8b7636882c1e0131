"""Alert tests: a real SMTP server (aiosmtpd), the task queue worked off as a worker would, channels and rules."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from huey.contrib.djhuey import HUEY

from alerts.models import AlertChannel, AlertRule, ChannelKind

# Flows and instances keep their tasks in the same queue; these are the alerts' own.
ALERT_TASKS = ("run_concluded", "credentials_rechecked", "deliver")


def work_off(limit: int = 200) -> list:
    """Execute every task in the queue, and every scheduled one as if its time had come, until none is left.

    What a worker does, in this process: a task that raises fails the test.
    Returns the tasks executed, in order (their `eta` says when a worker would have run them).
    """
    done = []
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
    while len(done) < limit:
        task = HUEY.dequeue()
        if task is None:
            scheduled = HUEY.read_schedule(later)
            if not scheduled:
                break
            for item in scheduled:
                HUEY.enqueue(item)
            continue
        task.execute()
        done.append(task)
    assert len(done) < limit, "the queue never ran empty"
    return done


def alert_tasks(tasks: list) -> list[tuple[str, tuple]]:
    names = [(task.name.rsplit(".", 1)[-1], task.args) for task in tasks]
    return [(name, args) for name, args in names if name in ALERT_TASKS]


@pytest.fixture
def empty_queue():
    HUEY.flush()
    yield HUEY
    HUEY.flush()


def email_channel(company, name: str = "Operations", recipients: str = "ops@acme.example") -> AlertChannel:
    return AlertChannel.objects.create(company=company, kind=ChannelKind.EMAIL, name=name, recipients=recipients)


def webhook_channel(company, url: str, name: str = "Pager") -> tuple[AlertChannel, str]:
    channel = AlertChannel(company=company, kind=ChannelKind.WEBHOOK, name=name, url=url)
    secret = channel.new_secret()
    channel.save()
    return channel, secret


def rule(company, event: str, *channels: AlertChannel, threshold: int | None = None) -> AlertRule:
    made = AlertRule.objects.create(company=company, event=event, threshold=threshold)
    made.channels.set(channels)
    return made


# --- a real SMTP server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mailbox:
    """What the SMTP server received: (envelope recipients, parsed message) per mail."""

    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        self.received.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list[EmailMessage]:
        return [message for _, message in self.received]


@pytest.fixture
def smtp_server(settings):
    """An SMTP server (aiosmtpd) on a free loopback port, with Django's SMTP backend pointed at it."""
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.MAILERS = {"default": {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": controller.port, "timeout": 10},
    }}
    settings.DEFAULT_FROM_EMAIL = "Patchworks alerts <alerts@patchworks.example>"
    try:
        yield mailbox
    finally:
        controller.stop()
