# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The engine with its test and benchmark hooks (tests and benchmarks only).

The same engine as `sfu._fastpath._engine` (compiled from the same sources)
plus `SansIOEngine`, which drives the core without sockets or threads, and the
C units' test hooks (hooks.pxi, nack.pxi, feedback.pxi). Production code
imports `_engine`, which has none of them.
"""
include "_engine.pyx"
include "hooks.pxi"
