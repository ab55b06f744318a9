"""Benchmarks, run on demand and never by the test suite: `python -m bench sync | outbox`.

See `bench/README.md` for what each one measures and the latest figures.
"""
