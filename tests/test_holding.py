"""A worker node's bound on what it holds: jobs counted, audio weighed as it is made."""

from __future__ import annotations

import numpy as np

from ttsd.jobs.distributed.holding import JOBS_PER_SLOT, Holding, made_bytes
from ttsd.jobs.made import Made, Tries
from ttsd.state.base import Stage

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


def test_a_job_being_made_weighs_the_sentences_that_arrived_as_they_arrive() -> None:
    """The engine's sentences count from the moment they arrive, before the job's own task reports
    anything: on a fast engine several jobs end before the first reports that it encodes."""
    holding = Holding(slots=1, budget_mb=1)
    making = Made(np.zeros(0, np.int16), 22050)
    tries = Tries(making=making)
    making.arrived = MB // 4
    holding.weigh("a", tries, Stage.QUEUED)  # waiting for a slot: nothing of it is made
    assert holding.total == 0
    holding.weigh("a", tries, Stage.SYNTHESIZING)
    making.arrived += MB // 4
    assert holding.total == MB // 2 and not holding.full(1)
    making.arrived += MB // 2  # read live: nobody told the holding
    assert holding.full(1)
    tries.made = made(MB // 4)  # joined and encoding: what it keeps now
    holding.weigh("a", tries, Stage.ENCODING)
    assert holding.total == MB // 2 and not holding.full(1)
    holding.release("a")
    assert holding.total == 0
