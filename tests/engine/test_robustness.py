"""Bad Fortran must come back as an EngineError (a clear error with a position), never as any
other exception, a hang or a process exit.

The corpus fixtures are mutated reproducibly (lines dropped, duplicated or swapped, tokens inserted
or deleted, the text cut short) and translated without verification. This found fparser calling
sys.exit(1) on a mismatched END name and raising AssertionError on a damaged TYPE block.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kernels.engine import translate_source
from kernels.engine.report import EngineError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
SOURCES = sorted(
    p for p in FIXTURES.iterdir() if p.suffix in (".f90", ".f") and "forbidden" not in p.name
)
TOKENS = [
    "(",
    ")",
    ",",
    "=",
    "do",
    "end do",
    "if",
    "then",
    "::",
    "*",
    "**",
    "&",
    "'",
    "\n",
    "end",
    "call",
    "x(",
    "0:",
    ".and.",
    "1.0d0",
    "-",
    "real(8)",
    "intent(in)",
    "type",
]


def mutate(source: str, rng: random.Random) -> str:
    lines = source.split("\n")
    kind = rng.randrange(6)
    i = rng.randrange(len(lines))
    if kind == 0 and len(lines) > 1:
        del lines[i]
    elif kind == 1 and lines[i]:
        j = rng.randrange(len(lines[i]))
        lines[i] = lines[i][:j] + rng.choice(TOKENS) + lines[i][j:]
    elif kind == 2 and lines[i]:
        j = rng.randrange(len(lines[i]))
        lines[i] = lines[i][:j] + lines[i][j + 1 :]
    elif kind == 3:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 4:
        lines.insert(i, rng.choice(lines))
    else:
        text = "\n".join(lines)
        return text[: rng.randrange(len(text) or 1)]
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(6))
def test_mutated_sources_give_engine_errors_or_results_never_other_exceptions(seed):
    rng = random.Random(seed)
    outcomes = {"result": 0, "engine_error": 0}
    for _ in range(40):
        path = rng.choice(SOURCES)
        source = path.read_text()
        for _ in range(rng.randint(1, 3)):
            source = mutate(source, rng)
        try:
            result = translate_source(source, filename=path.name, verify=False)
        except EngineError as exc:
            outcomes["engine_error"] += 1
            assert exc.message
            assert all(d.line >= 1 and d.column >= 1 for d in exc.diagnostics)
        else:
            outcomes["result"] += 1
            assert all(k.status in ("translated", "unsupported") for k in result.kernels)
    assert sum(outcomes.values()) == 40


def test_the_mutations_really_break_sources():
    # Guards the test above against a mutate() that silently stopped mutating.
    rng = random.Random(0)
    broken = 0
    for path in SOURCES[:20]:
        try:
            translate_source(mutate(mutate(path.read_text(), rng), rng), verify=False)
        except EngineError:
            broken += 1
    assert broken >= 3
