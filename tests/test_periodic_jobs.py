"""Periodic jobs run once per period, however many task workers enqueue them (flows.periodic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from flows import periodic, tasks
from flows.models import PeriodicJobRun
from tests.processes import stop_all
from tests.test_engine_workers import on_committed_rows, wait_until, workers  # noqa: F401 (the workers fixture)

BEAT_PERIOD_SECONDS = 3


@on_committed_rows
def test_three_workers_with_their_schedulers_on_run_a_periodic_job_once_per_period(workers, tmp_path):
    beats = tmp_path / "beats.log"
    workers.env |= {"BEAT_LOG": str(beats), "BEAT_PERIOD_SECONDS": str(BEAT_PERIOD_SECONDS), "LOG_LEVEL": "INFO"}
    # Three consumers, each enqueuing beat every second: about nine enqueues per period.
    started = timezone.now()
    for _ in range(3):
        workers.start(threads=2, periodic=True, program=("-m", "tests.periodic_consumer"))

    def body_runs() -> list[str]:
        return beats.read_text().splitlines() if beats.exists() else []

    wait_until(lambda: len(body_runs()) >= 4, timeout=120, what=f"four periods of beat; worker logs:\n{workers.logs()}")
    stop_all(workers.processes, timeout=10)
    minutes = int(timezone.now().timestamp() // 60 - started.timestamp() // 60) + 1

    claims = list(PeriodicJobRun.objects.filter(job="beat").order_by("period_start"))
    # Every run of the body was the one claim of its period ...
    assert len(body_runs()) == len(claims) >= 4
    # ... the periods follow one another, none left out and none twice ...
    starts = [claim.period_start for claim in claims]
    assert starts == [starts[0] + timedelta(seconds=BEAT_PERIOD_SECONDS * n) for n in range(len(claims))]
    # ... although every consumer enqueued beat in them.
    logs = workers.logs()
    assert logs.count("Enqueueing periodic task __main__.beat") > 2 * len(claims), logs
    assert logs.count("Periodic job beat runs for the period from") == len(claims)
    # The project's own jobs are guarded the same way: the minute tick ran once in each minute the test took.
    ticks = PeriodicJobRun.objects.filter(job="tick").count()
    assert 1 <= ticks <= minutes and logs.count("Periodic job tick runs for the period from") == ticks
    assert logs.count("Enqueueing periodic task flows.tasks.tick") > 2 * ticks


def test_a_period_is_claimed_once_and_the_next_period_again(db):
    noon = datetime(2026, 12, 5, 12, 0, 20, tzinfo=UTC)
    assert periodic.claim("tick", 60, now=noon) == noon.replace(second=0)
    assert periodic.claim("tick", 60, now=noon + timedelta(seconds=39)) is None
    assert periodic.claim("recheck_credentials", 300, now=noon) == noon.replace(minute=0, second=0)
    assert periodic.claim("tick", 60, now=noon + timedelta(seconds=40)) == noon.replace(minute=1, second=0)
    assert list(PeriodicJobRun.objects.values_list("job", "period_start").order_by("period_start", "job")) == [
        ("recheck_credentials", noon.replace(second=0)),
        ("tick", noon.replace(second=0)),
        ("tick", noon.replace(minute=1, second=0)),
    ]


def test_old_claims_are_deleted_by_the_jobs_next_run(db):
    long_ago = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    periodic.claim("tick", 60, now=long_ago)
    periodic.claim("clean_up_runs", 3600, now=long_ago)
    periodic.claim("tick", 60, now=long_ago + timedelta(days=3))
    assert sorted(PeriodicJobRun.objects.values_list("job", "period_start")) == [
        ("clean_up_runs", long_ago),
        ("tick", long_ago + timedelta(days=3)),
    ]


def test_the_minute_tick_does_its_work_once_a_minute_however_often_it_is_executed(db, monkeypatch):
    done = []
    monkeypatch.setattr(tasks, "tick_now", lambda: done.append(1))
    for _ in range(3):
        tasks.tick.call_local()
    assert len(done) == 1
    (claim,) = PeriodicJobRun.objects.filter(job="tick")
    assert claim.period_start.second == 0 and claim.worker.endswith(":" + str(__import__("os").getpid()))
