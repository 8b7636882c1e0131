"""Durations on run pages read naturally, from a fraction of a second to days."""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from flows import queueing
from flows.models import FlowRun, RunStatus, RunTrigger
from patchworks_site.models import Role
from patchworks_site.templatetags.durations import natural_duration, natural_ms
from tests.flow_helpers import connector, instance, receive_then_send_flow  # noqa: F401 - fixtures


@pytest.mark.parametrize("seconds, text", [
    (0.42, "0.4 s"), (9.96, "10.0 s"), (42, "42 s"), (60, "1 min"), (185, "3 min 5 s"), (3600, "1 h"),
    (7380, "2 h 3 min"), (50 * 3600, "2 d 2 h"), (-1, "0.0 s"),
])
def test_natural_duration(seconds, text):
    assert natural_duration(timedelta(seconds=seconds)) == text
    assert natural_duration(None) == ""


def test_a_running_run_says_how_long_it_has_run_in_seconds(company, instance, client_for, make_user):
    run = queueing.queue_run(receive_then_send_flow(company, instance), RunTrigger.MANUAL)
    client = client_for(make_user(company, Role.READ_ONLY))
    clock = time.monotonic()
    FlowRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, started_at=timezone.now() - timedelta(seconds=42))
    page = client.get(f"/flows/runs/{run.pk}/").content.decode()
    took = time.monotonic() - clock  # a busy machine may take seconds to answer
    shown = re.search(r"running for (\d+) s\b", page)
    assert shown and 42 <= int(shown[1]) <= 42 + math.ceil(took), page
    assert "running for 0 minutes" not in page


@pytest.mark.parametrize("milliseconds, text", [
    (0, "0 ms"), (999, "999 ms"), (1000, "1.0 s"), (61_000, "1 min 1 s"), (3_600_000, "1 h"),
])
def test_waits_in_milliseconds_read_naturally(milliseconds, text):
    assert natural_ms(milliseconds) == text
