"""A worker node's bound on what it holds: jobs counted, made audio weighed."""

from __future__ import annotations

import numpy as np

from ttsd.jobs.distributed.holding import JOBS_PER_SLOT, Holding, made_bytes
from ttsd.jobs.made import Made

MB = 1024 * 1024


def made(samples: int, *, copies: int = 0, views: int = 0) -> Made:
    pcm = np.zeros(samples, np.int16)
    unstored = {f"copy{i}": pcm[:1000].copy() for i in range(copies)}
    unstored |= {f"view{i}": pcm[:1000] for i in range(views)}
    return Made(pcm, 22050, unstored=unstored)


def test_sentences_are_weighed_once_whether_views_of_the_text_or_apart() -> None:
    assert made_bytes(made(MB)) == 2 * MB
    assert made_bytes(made(MB, views=3)) == 2 * MB  # they are the text's own samples
    assert made_bytes(made(MB, copies=3)) == 2 * MB + 3 * 2000


def test_a_node_is_full_at_its_budget_of_audio_or_its_count_of_jobs() -> None:
    holding = Holding(slots=2, budget_mb=4)  # 8 MB in all
    assert not holding.full(0)
    holding.hold("a", made(MB))  # 2 MB
    holding.hold("a", made(MB))  # weighed again, not twice
    holding.hold("b", made(2 * MB))  # 4 MB
    assert holding.total == 6 * MB and not holding.full(2)
    holding.hold("c", made(MB))
    assert holding.full(3)
    holding.release("b")
    holding.release("unknown")
    assert holding.total == 4 * MB and not holding.full(3)
    assert holding.full(2 * JOBS_PER_SLOT) and not holding.full(2 * JOBS_PER_SLOT - 1)
