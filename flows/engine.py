"""The task that executes one flow run on a worker.

Apart from flows.tasks (the periodic tasks, which use flows.runs) so that
flows.runs can hand a run to the engine without an import circle. flows.tasks
imports this module, so huey's autodiscovery registers the task.
"""

from __future__ import annotations

from huey.contrib.djhuey import db_task

from flows import runner


@db_task()
def execute_run(run_pk: int) -> None:
    runner.execute(run_pk)
