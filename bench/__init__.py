"""Benchmarks: every figure is printed beside the raw limit measured in the same run.

Run them all with ``python -m bench.run [--quick]`` (``make bench``); it writes
``bench/results.json`` and ``bench/results.md``. Any module ``bench/bench_*.py`` is picked
up by the runner; a module provides::

    def run(ctx: bench._harness.Context) -> None:
        ...  # ctx.record(...) each figure; ctx.raw("ed25519_verify_2t") for a raw limit

and may be run alone with ``python -m bench.bench_x [--quick]``
(:func:`bench._harness.main`). The raw limits live in :mod:`bench.raw`; a figure names the
one it compares against and the harness prints and stores the ratio.

Rules: each figure is repeated (median and p99 over the repetitions); tests never time
anything; benchmarks never change the ledger's behaviour.
"""
