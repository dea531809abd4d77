"""The randomized nemesis (nemesis.py) as part of the suite: 2 minutes under `make test`,
10 under `make soak`.

NEMESIS_SEED replays a run (random when unset; the seed is printed first and is in every
failure); NEMESIS_SECONDS sets how long the schedule runs (default 120). The schedule
depends on both, so a replay passes both, as every failure message spells out.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from zk_sensor.testing.nemesis import (
    OBSERVER_RETRY,
    History,
    Nemesis,
    Rig,
    Schedule,
    open_rig,
    plan,
)
from zk_sensor.testing.zookeeper import MakeZk, ZkEnsemble

SEED = int(os.environ.get("NEMESIS_SEED") or random.SystemRandom().randrange(2**32))
SECONDS = float(os.environ.get("NEMESIS_SECONDS") or 120)
# Beyond the schedule: starting the ensemble and the fleet, the settling after each fault
# on a loaded machine, the collector's catch-up and the clean stop.
TIMEOUT_S = 2 * SECONDS + 300


@pytest.fixture
def rig(zk_ensemble: ZkEnsemble, make_zk: MakeZk, tmp_path: Path) -> Iterator[Rig]:
    observer = make_zk(zk_ensemble.hosts, command_retry=OBSERVER_RETRY)
    with open_rig(zk_ensemble, observer, tmp_path) as running:
        yield running


def run_nemesis(rig: Rig, schedule: Schedule) -> tuple[History, str, str]:
    """The history, the report for failure messages, and the summary of armed faults."""
    with Nemesis(rig, schedule) as nemesis, nemesis.reported():
        nemesis.start_fleet()
        nemesis.run()
        history = nemesis.finish()
        return history, nemesis.report(), nemesis.armed_summary()


@pytest.mark.ensemble
@pytest.mark.timeout(TIMEOUT_S)
def test_nemesis(rig: Rig) -> None:
    schedule = plan(SEED, SECONDS)
    print("\n" + "\n".join([schedule.header(), "schedule (planned offsets):",
                            *schedule.lines(), "timeline:"]), flush=True)
    history, report, armed = run_nemesis(rig, schedule)
    print(history.summary(schedule, armed))
    assert not (problem := history.rounds_problem()), f"1. rounds: {problem}\n\n{report}"
    assert not (problem := history.epochs_problem()), f"2. epochs: {problem}\n\n{report}"
    assert not (problem := history.gap_problem()), f"3. leaderless gap: {problem}\n\n{report}"
    assert not (problem := history.counter_problem()), f"4. counter: {problem}\n\n{report}"
