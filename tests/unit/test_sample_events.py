"""Every function has a sample event under events/ (for `sam local invoke -e`); that the handlers accept them is
checked on PostgreSQL (tests/integration/test_sample_events.py)."""

from __future__ import annotations

from pathlib import Path

EVENTS = Path(__file__).parents[2] / "events"


def test_every_function_has_a_sample_event() -> None:
    functions = {p.name for p in (EVENTS.parent / "functions").iterdir() if (p / "app.py").is_file()}
    covered = {
        e.name.removesuffix(".json").removesuffix("_get").removesuffix("_health").removesuffix("_retry")
        for e in EVENTS.glob("*.json")
    }
    assert functions <= covered
