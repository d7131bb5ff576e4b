"""One admission policy for both queues: a pool's depth against its limit, and the wait it
predicts against ``TTSD_MAX_WAIT``; a refusal carries an honest Retry-After.

The predicted wait is the depth times what a job costs the slower of its two stages (a slot's
time ÷ the pool's slots, or the post-processing stage's thread time ÷ its threads: slots pause
while that stage is behind, so then it sets the pace), plus what that stage has yet to finish."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import Overloaded
from .model import MovingAverage
from .post import PostLoad

# A job's duration before any was measured: used for Retry-After only. Shedding on a predicted
# wait starts once real durations are known, so a cold server does not refuse work on a guess.
INITIAL_JOB_SECONDS = 1.0


NO_POST_LOAD = PostLoad()


class JobTime(MovingAverage):
    """The slot time a job takes, on average (None until one was measured)."""

    def predicted_wait(self, depth: int, slots: int, post: PostLoad = NO_POST_LOAD) -> float:
        if self.seconds is None:
            return 0.0
        return depth * max(self.seconds / max(1, slots), post.per_job) + post.drain

    def retry_after(self, depth: int, slots: int, post: PostLoad = NO_POST_LOAD) -> int:
        per_job = INITIAL_JOB_SECONDS if self.seconds is None else self.seconds
        return max(1, math.ceil(depth * max(per_job / max(1, slots), post.per_job) + post.drain))


@dataclass(frozen=True)
class Admission:
    queue_limit: int
    max_wait: float

    def admit(
        self, pool: str, depth: int, slots: int, job_time: JobTime, post: PostLoad = NO_POST_LOAD
    ) -> None:
        """Raises Overloaded when the pool's queue cannot take another job."""
        predicted = job_time.predicted_wait(depth, slots, post)
        if depth >= self.queue_limit or predicted > self.max_wait:
            raise Overloaded(
                f"the {pool} queue is full ({depth} jobs waiting, about {predicted:.0f} s)",
                retry_after=job_time.retry_after(depth, slots, post),
            )
