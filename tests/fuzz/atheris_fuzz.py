"""Long fuzz runs of one target with atheris (libFuzzer), from the committed corpus.

Usage::

    .venv/bin/pip install atheris
    .venv/bin/python -m tests.fuzz.atheris_fuzz TARGET [libFuzzer options, e.g. -max_total_time=600]

New inputs go to ``build/fuzz/<target>/corpus/`` (not committed); a crash input is written
by libFuzzer to ``build/fuzz/<target>/crash-*``. Copy interesting ones into ``tests/fuzz/corpus/<target>/`` under
their SHA-256 prefix (see ``make_corpus.py``) and they run in CI from then on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["ledger"]):
    from tests.fuzz.targets import CORPUS, SHARED, TARGETS, run_target  # instruments ledger.*


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: atheris_fuzz TARGET [libFuzzer options]; targets: {', '.join(TARGETS)}")
    name = sys.argv[1]
    out = Path("build") / "fuzz" / name
    out.mkdir(parents=True, exist_ok=True)

    def one(data: bytes) -> None:
        run_target(name, data)  # a Finding (AssertionError) is what libFuzzer reports

    args = [sys.argv[0], f"-artifact_prefix={out}/", *sys.argv[2:], str(out / "corpus"),
            str(CORPUS / name), str(CORPUS / SHARED)]
    (out / "corpus").mkdir(exist_ok=True)
    atheris.Setup(args, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
