"""Admission: the moving average of a job's slot time, the wait it predicts, and when a queue
refuses a job (with an honest Retry-After)."""

from __future__ import annotations

import pytest

from ttsd.errors import Overloaded
from ttsd.jobs.admission import Admission, JobTime
from ttsd.jobs.post import PostLoad


def test_the_first_measurement_is_taken_as_is_then_smoothed_by_a_fifth() -> None:
    job_time = JobTime()
    assert job_time.seconds is None
    job_time.observe(10.0)
    assert job_time.seconds == 10.0
    job_time.observe(20.0)
    assert job_time.seconds == pytest.approx(12.0)
    job_time.observe(20.0)
    assert job_time.seconds == pytest.approx(13.6)
    job_time.observe(0.0)
    assert job_time.seconds == pytest.approx(10.88)


def test_a_wait_is_predicted_only_once_a_job_was_measured() -> None:
    assert JobTime().predicted_wait(depth=10_000, slots=1) == 0.0
    measured = JobTime(3.0)
    assert measured.predicted_wait(depth=8, slots=4) == pytest.approx(6.0)
    assert measured.predicted_wait(depth=8, slots=0) == pytest.approx(24.0)  # no slots counts as one


@pytest.mark.parametrize(
    ("seconds", "depth", "slots", "expected"),
    [
        (None, 0, 1, 1),  # never below a second
        (None, 5, 2, 3),  # unmeasured: a second a job, ceil(5 × 1 ÷ 2)
        (2.5, 3, 2, 4),  # ceil(3.75)
        (2.0, 4, 2, 4),  # exact: not rounded up further
        (0.01, 3, 8, 1),
        (1.5, 6, 0, 9),
    ],
)
def test_retry_after_is_the_predicted_wait_rounded_up(
    seconds: float | None, depth: int, slots: int, expected: int
) -> None:
    assert JobTime(seconds).retry_after(depth, slots) == expected


def test_a_queue_at_its_limit_refuses_even_when_cold() -> None:
    admission = Admission(queue_limit=4, max_wait=30.0)
    admission.admit("piper", depth=3, slots=2, job_time=JobTime())
    with pytest.raises(Overloaded) as refused:
        admission.admit("piper", depth=4, slots=2, job_time=JobTime())
    assert refused.value.retry_after == 2 and refused.value.status == 503
    assert "piper" in refused.value.message


def test_a_cold_queue_never_refuses_on_a_guessed_wait() -> None:
    Admission(queue_limit=1000, max_wait=0.5).admit("piper", depth=999, slots=1, job_time=JobTime())


def test_a_predicted_wait_over_max_wait_refuses_and_at_max_wait_admits() -> None:
    admission = Admission(queue_limit=1000, max_wait=30.0)
    admission.admit("hibari", depth=3, slots=1, job_time=JobTime(10.0))  # 30 s: not over
    with pytest.raises(Overloaded) as refused:
        admission.admit("hibari", depth=3, slots=1, job_time=JobTime(11.0))  # 33 s
    assert refused.value.retry_after == 33
    # More slots drain the same queue sooner.
    admission.admit("hibari", depth=3, slots=2, job_time=JobTime(11.0))


def test_when_post_processing_sets_the_pace_the_wait_counts_its_rate_and_backlog() -> None:
    measured = JobTime(0.01)  # a fast engine: 10 ms of a slot per job
    idle = measured.predicted_wait(depth=100, slots=2)
    assert idle == pytest.approx(0.5)
    # Storing takes 60 ms of a thread per job on two threads, and 3 s of work are already held.
    slow_post = PostLoad(per_job=0.03, drain=3.0)
    assert measured.predicted_wait(depth=100, slots=2, post=slow_post) == pytest.approx(6.0)
    assert measured.retry_after(100, 2, slow_post) == 6
    # A stage that keeps up changes nothing but its own drain.
    assert measured.predicted_wait(depth=100, slots=2, post=PostLoad(0.001, 0.0)) == pytest.approx(0.5)
    with pytest.raises(Overloaded) as refused:
        Admission(queue_limit=1000, max_wait=5.0).admit("espeak", 100, 2, measured, slow_post)
    assert refused.value.retry_after == 6
    Admission(queue_limit=1000, max_wait=5.0).admit("espeak", 100, 2, measured)  # without it: admitted
