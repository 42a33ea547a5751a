"""The ``kill -9`` table, small: 5 kills of a 100-task run (see
tests/benchmarks/bench_kill_table.py for the 500-task, 20-kill table and the definitions).

After every kill, each task left ambiguous (``submitting``) must have a create the API
received whose answer was lost: ambiguity is for creates that may have reached the API,
not for tasks that were waiting for their turn. A few per kill are tolerated: creates caught
between their durable ``submitting`` row and their bytes leaving. One group commit of the
state writer marks every create whose turn came during the batch, and they are sent right
after it; on an idle machine that is 0 or 1 create at a kill, on a 2-core machine running
two test workers (and other processes) up to 3 were seen, and once 4 (in a full `.ci/run`,
at the first kill, 6 creates in), and 7 at one kill while benchmarks ran beside the suite
(load average 5). Over the whole table such tasks
stay a minority of the lost answers: the defect this guards against left hundreds of tasks
ambiguous for a handful of lost answers.
"""

from __future__ import annotations

from pathlib import Path

from .support import format_kill_table, kill_table

PER_KILL = 10  # creates between their durable row and their bytes leaving, at one kill


def test_each_kill_leaves_ambiguous_only_creates_whose_answer_was_lost(tmp_path: Path) -> None:
    rows = kill_table(tmp_path, tasks=100, kills=5, seed=3, max_step=10)
    print("\n" + format_kill_table(rows))
    assert len(rows) == 5
    assert rows[-1].creates > 0
    table = format_kill_table(rows)
    assert all(row.unmatched <= PER_KILL for row in rows), table
    assert all(row.difference <= PER_KILL for row in rows), table
    lost = sum(row.lost for row in rows)
    assert sum(row.unmatched for row in rows) <= max(PER_KILL, lost // 2), table
