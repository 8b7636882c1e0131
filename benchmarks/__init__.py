"""Benchmarks of the dashboard's pages, flow runs, rate limits and pools.

Run them as modules from the project root (`.venv/bin/python -m benchmarks.pages`),
so they import the project's apps and the tests' helpers (`tests.raw_server`,
`tests.manifest_parts`) as ordinary packages.
"""
