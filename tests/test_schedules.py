"""Schedule evaluation with a controllable clock: what is due, what is skipped, what comes next."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from flows import schedules
from flows.models import FlowRun, FlowSchedule, ProcessFlow, RunStatus, RunTrigger, ScheduleKind
from flows.schedules import MINUTE_INTERVALS


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def flow(company) -> ProcessFlow:
    return ProcessFlow.objects.create(company=company, name="Orders to ERP", enabled=True)


@pytest.mark.parametrize(
    "kind, fields, created, first, second",
    [
        (ScheduleKind.MINUTES, {"every": 15}, "2026-03-02 10:07", "2026-03-02 10:15", "2026-03-02 10:30"),
        (ScheduleKind.MINUTES, {"every": 1}, "2026-03-02 10:07:30", "2026-03-02 10:08", "2026-03-02 10:09"),
        (ScheduleKind.HOURLY, {"minute": 5}, "2026-03-02 10:07", "2026-03-02 11:05", "2026-03-02 12:05"),
        (ScheduleKind.DAILY, {"hour": 6, "minute": 30}, "2026-03-02 07:00", "2026-03-03 06:30", "2026-03-04 06:30"),
        # Months without day 31 are skipped.
        (ScheduleKind.MONTHLY, {"day": 31, "hour": 0, "minute": 0}, "2026-01-31 01:00", "2026-03-31 00:00", "2026-05-31 00:00"),
        # Weekdays at 09:00, created on a Saturday.
        (ScheduleKind.ADVANCED, {"cron": "0 9 * * 1-5"}, "2026-03-07 12:00", "2026-03-09 09:00", "2026-03-10 09:00"),
    ],
)
def test_each_kind_of_schedule_fires_at_its_next_time_in_utc(flow, kind, fields, created, first, second):
    schedule = schedules.create_schedule(flow, kind, now=at(created), **fields)
    assert schedule.next_run_at == at(first)

    assert schedules.enqueue_due(at(first) - timedelta(seconds=1)) == []
    (run,) = schedules.enqueue_due(at(first))
    assert (run.trigger, run.schedule, run.queued_at, run.reference_time) == (RunTrigger.SCHEDULE, schedule, at(first), at(first))
    schedule.refresh_from_db()
    assert (schedule.next_run_at, schedule.last_run_at) == (at(second), at(first))
    assert schedules.enqueue_due(at(first)) == []  # the same due time never enqueues twice


def test_missed_due_times_are_folded_into_one_run(flow):
    schedule = schedules.create_schedule(flow, ScheduleKind.MINUTES, every=15, now=at("2026-03-02 10:07"))
    # The workers were down from 10:15 to 13:02.
    assert len(schedules.enqueue_due(at("2026-03-02 13:02"))) == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-03-02 13:15")


def test_a_disabled_flow_s_schedule_enqueues_nothing_and_moves_on(flow):
    flow.enabled = False
    flow.save()
    schedule = schedules.create_schedule(flow, ScheduleKind.HOURLY, minute=0, now=at("2026-03-02 10:07"))
    assert schedules.enqueue_due(at("2026-03-02 11:00")) == []
    schedule.refresh_from_db()
    assert schedule.next_run_at == at("2026-03-02 12:00") and not FlowRun.objects.exists()


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.RUNNING])
def test_no_run_is_enqueued_while_one_is_queued_or_running_and_the_skip_is_counted(flow, status, caplog):
    schedule = schedules.create_schedule(flow, ScheduleKind.MINUTES, every=5, now=at("2026-03-02 10:00"))
    (first,) = schedules.enqueue_due(at("2026-03-02 10:05"))
    FlowRun.objects.filter(pk=first.pk).update(status=status)

    with caplog.at_level(logging.WARNING, logger="flows.schedules"):
        assert schedules.enqueue_due(at("2026-03-02 10:10")) == []
    schedule.refresh_from_db()
    assert (schedule.skipped_count, schedule.last_skipped_at, schedule.next_run_at) == (
        1, at("2026-03-02 10:10"), at("2026-03-02 10:15")
    )
    assert f"Schedule {schedule.pk} (every 5 minutes) of process flow {flow.pk} skipped" in caplog.text

    FlowRun.objects.filter(pk=first.pk).update(status=RunStatus.SUCCESS)
    assert len(schedules.enqueue_due(at("2026-03-02 10:15"))) == 1


def test_two_schedules_due_together_give_one_run(flow):
    schedules.create_schedule(flow, ScheduleKind.HOURLY, minute=0, now=at("2026-03-02 10:07"))
    schedules.create_schedule(flow, ScheduleKind.MINUTES, every=30, now=at("2026-03-02 10:07"))
    assert len(schedules.enqueue_due(at("2026-03-02 11:00"))) == 1
    assert sum(FlowSchedule.objects.values_list("skipped_count", flat=True)) == 1


def test_several_flows_are_scheduled_independently(company, flow):
    other = ProcessFlow.objects.create(company=company, name="Stock sync", enabled=True)
    schedules.create_schedule(flow, ScheduleKind.MINUTES, every=10, now=at("2026-03-02 10:00"))
    schedules.create_schedule(other, ScheduleKind.MINUTES, every=10, now=at("2026-03-02 10:00"))
    due = schedules.enqueue_due(at("2026-03-02 10:10"))
    assert sorted(run.flow.name for run in due) == ["Orders to ERP", "Stock sync"]


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(list(ScheduleKind)),
    every=st.sampled_from(MINUTE_INTERVALS),
    day=st.integers(1, 28),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    moment=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)),
)
def test_the_next_time_is_after_now_and_matches_the_schedule(kind, every, day, hour, minute, moment):
    fields = {"every": every, "day": day, "hour": hour, "minute": minute, "cron": f"{minute} {hour} * * *"}
    expression = schedules.cron_for(kind, **fields)
    assert schedules.cron_error(expression) is None
    following = schedules.next_after(expression, moment)
    assert moment < following and following.second == 0 and following.tzinfo is not None
    if kind == ScheduleKind.MINUTES:
        assert following.minute % every == 0 and following - moment <= timedelta(minutes=every)
    else:
        assert following.minute == minute
    if kind in (ScheduleKind.DAILY, ScheduleKind.MONTHLY, ScheduleKind.ADVANCED):
        assert following.hour == hour and following - moment <= timedelta(days=31 if kind == ScheduleKind.MONTHLY else 1)
    if kind == ScheduleKind.MONTHLY:
        assert following.day == day
