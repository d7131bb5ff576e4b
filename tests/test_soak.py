"""The soak's short form (``bench/soak.py``): under a minute of Zipf support traffic with bursts
against one embedded server with a cache budget far below what the run writes, restarted half way.
Only what must hold on any machine is asserted; its timing figures are ``python -m bench soak``'s."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import soak


@pytest.mark.slow
def test_soak_short_form_loses_nothing_and_keeps_its_budget(tmp_path: Path) -> None:
    config = soak.Config.short()
    result = soak.soak(config, tmp_path)
    counts, checks, restart = result["counts"], result["checks"], result["restart"]
    summary = {k: result[k] for k in ("counts", "done", "failures", "restart", "rss", "disk", "checks")}

    # Every accepted task ended done: none failed, vanished, was dropped by the restart or left over.
    assert counts["accepted"] > 0, summary
    assert result["lost"] == 0, summary
    assert result["done"] == counts["accepted"], summary
    assert counts["other_errors"] == 0 and counts["shed_without_retry_after"] == 0, summary
    assert checks["no_server_errors_logged"], summary

    # The cache evicted (the run wrote more than its budget) and stayed within budget + slack.
    assert checks["working_set_over_budget"], summary
    assert checks["disk_within_budget"], summary

    # The restarted server answered earlier texts from the index the first one left.
    assert restart["old_exit_code"] == 0, summary
    assert checks["restart_answers_hits"], summary

    assert result["rss"]["max_mb"] <= soak.RSS_LIMIT_MB, summary
