"""The ``kill -9`` table, small: 5 kills of a 100-task run (see
tests/benchmarks/bench_kill_table.py for the 500-task, 20-kill table and the definitions).

After every kill, each task left ambiguous (``submitting``) must have a create the API
received whose answer was lost: ambiguity is for creates that may have reached the API,
not for tasks that were waiting for their turn. One per kill is tolerated: a create caught
between its durable ``submitting`` row and its bytes leaving.
"""

from __future__ import annotations

from pathlib import Path

from .support import format_kill_table, kill_table


def test_each_kill_leaves_ambiguous_only_creates_whose_answer_was_lost(tmp_path: Path) -> None:
    rows = kill_table(tmp_path, tasks=100, kills=5, seed=3, max_step=10)
    print("\n" + format_kill_table(rows))
    assert len(rows) == 5
    assert rows[-1].creates > 0
    assert all(row.unmatched <= 1 for row in rows), format_kill_table(rows)
    assert all(row.difference <= 1 for row in rows), format_kill_table(rows)
