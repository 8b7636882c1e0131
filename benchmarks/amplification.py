"""Benchmark: a worker's peak memory on the memory amplification flow, with the run bounds in force.

What it measures
----------------
The flow: *receive* 300,000 tiny records (``{}``, a 0.9 MB page) → *map* with
50 constants of 500 characters → *send* as a batch. Unbounded, the map would
make a 7.5 GB page and the batch send one body of that size. With the bounds
(FLOW_MAX_PAGE_BYTES, FLOW_MAX_BATCH_RECORDS, FLOW_MAX_REQUEST_BYTES) the map
fails the run as soon as its page passes FLOW_MAX_PAGE_BYTES.

A second flow shows a large page that stays within the bounds: the same
300,000 records through a map with one short constant, sent as a batch: the
send splits the page into requests of at most FLOW_MAX_BATCH_RECORDS records.

Each flow runs in a fresh Python process (the runner called inline, as a
worker's task thread does) on a throwaway SQLite database; the third-party API
is a small HTTP server in this process on 127.0.0.1. For each it prints the
run's outcome, the number of requests the API received, the largest request
body, the time, and the worker process's peak RSS (``ru_maxrss``) before the
run (Django set up, the database migrated) and after it.

How to run (from the project root)
----------------------------------
::

    .venv/bin/python -m benchmarks.amplification
    .venv/bin/python -m benchmarks.amplification --records 300000 --page-bytes 33554432

``--page-bytes`` / ``--batch-records`` / ``--request-bytes`` set the bounds for
the worker (their settings' defaults otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
TEST_CREDENTIAL_KEYS = "test-1:a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="


class FakeApi(BaseHTTPRequestHandler):
    """GET /api/orders: `records` empty objects; POST /api/imports: counts the request and its body."""

    records = 300_000
    posts: list[int] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        body = ("[" + ",".join(["{}"] * self.records) + "]").encode()
        self.answer(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        left = length
        while left:
            left -= len(self.rfile.read(min(left, 1 << 20)))
        self.posts.append(length)
        self.answer(b'{"ok": true}')

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(base_url: str, scenario: str) -> None:
    """Set up Django on a throwaway database, build the flow, run it inline and print what happened as JSON."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from connectors import manifest as manifests
    from connectors.models import Connector
    from flows import execution
    from flows.models import FlowRun, ProcessFlow, RunTrigger, Shape
    from instances.models import Instance
    from patchworks_site.models import Company

    company = Company.objects.create(name="Bench")
    connector = manifests.apply(manifests.validate({
        "name": "Amplification API", "system_type": "Other", "version": "1", "base_url": base_url,
        "rate_limit": {"amount": 100_000, "unit": "second"}, "concurrency_limit": None,
        "auth_methods": [{"key": "token", "name": "API token", "type": "token",
                          "variables": [{"key": "api_token", "label": "API token", "required": True, "secret": True}],
                          "headers": {"Authorization": "Bearer {{api_token}}"}, "test_request": {"path": "/me"}}],
        "endpoints": [
            {"key": "list", "name": "List", "entity": "Order", "direction": "receive", "method": "GET", "path": "/orders"},
            {"key": "import", "name": "Import", "entity": "Order", "direction": "send", "method": "POST",
             "path": "/imports"},
        ],
    }), connector=Connector(company=company))
    instance = Instance.with_connector_defaults(connector, name="Bench", auth_method=connector.auth_methods.first())
    instance.set_secrets({"api_token": "bench-token-123456"})
    instance.save()
    if scenario == "amplification":
        fields = [{"target": f"note_{n}", "constant": chr(65 + n % 26) * 500} for n in range(50)]
    else:
        fields = [{"target": "source", "constant": "bench"}]
    flow = ProcessFlow.objects.create(company=company, name=scenario)
    Shape.objects.create(flow=flow, position=0, instance=instance, endpoint=connector.endpoints.get(key="list"))
    Shape.objects.create(flow=flow, position=1, kind="map", config={"fields": fields})
    Shape.objects.create(flow=flow, position=2, instance=instance, endpoint=connector.endpoints.get(key="import"),
                         config={"send_as": "batch", "timeout": 120})
    run = FlowRun.objects.create(company=company, flow=flow, trigger=RunTrigger.MANUAL,
                                 queued_at=django.utils.timezone.now(), reference_time=django.utils.timezone.now())
    before = peak_rss_mb()
    started = time.monotonic()
    run = execution.execute(run.pk)
    print(json.dumps({
        "status": run.status, "reason": run.failure_reason, "seconds": round(time.monotonic() - started, 2),
        "rss_before_mb": round(before, 1), "rss_peak_mb": round(peak_rss_mb(), 1),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--page-bytes", type=int)
    parser.add_argument("--batch-records", type=int)
    parser.add_argument("--request-bytes", type=int)
    parser.add_argument("--scenarios", default="amplification,within-bounds")
    parser.add_argument("--child", nargs=2, metavar=("BASE_URL", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    FakeApi.records = args.records
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/api"
    print(f"{args.records:,} records of {{}} ({(3 * args.records + 1) / 1e6:.1f} MB page)")
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "patchworks_site.settings",
            "CREDENTIAL_KEYS": TEST_CREDENTIAL_KEYS,
            "LIMITS_STORE_PATH": f"{tmp}/limits.sqlite3", "HUEY_SQLITE_PATH": f"{tmp}/huey.sqlite3",
            "OUTBOUND_ALLOW_LOOPBACK": "1",
        }
        env.pop("REDIS_URL", None)
        for name, value in (("FLOW_MAX_PAGE_BYTES", args.page_bytes), ("FLOW_MAX_BATCH_RECORDS", args.batch_records),
                            ("FLOW_MAX_REQUEST_BYTES", args.request_bytes)):
            if value is not None:
                env[name] = str(value)
        for scenario in args.scenarios.split(","):
            FakeApi.posts = []
            env["DATABASE_URL"] = f"sqlite:///{tmp}/{scenario}.sqlite3"  # a fresh database per flow
            done = subprocess.run([sys.executable, "-m", "benchmarks.amplification", "--child", base_url, scenario],
                                  env=env, cwd=PROJECT_DIR, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-3000:])
                return 1
            result = json.loads(done.stdout.strip().splitlines()[-1])
            largest = max(FakeApi.posts, default=0)
            print(f"\n{scenario}: {result['status']} in {result['seconds']} s; {len(FakeApi.posts):,} request(s) "
                  f"sent, the largest body {largest / 1e6:.2f} MB")
            if result["reason"]:
                print(f"  reason: {result['reason']}")
            print(f"  worker peak RSS: {result['rss_peak_mb']} MB (before the run: {result['rss_before_mb']} MB)")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
