"""`train --time-budget-min`: the plan is fitted to the time left at the pace of the recent epochs."""
from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")

from training.train import _cut_to_budget  # noqa: E402 - after the skip: training needs torch


def _state(planned: int, epoch_seconds: list[float]) -> dict[str, Any]:
    history = [{"epoch": i + 1, "epoch_s": s} for i, s in enumerate(epoch_seconds)]
    return {"epoch": len(history), "planned_epochs": planned, "elapsed_s": sum(epoch_seconds), "history": history,
            "budget_cut": False}


def test_a_steady_pace_cuts_the_plan_to_what_fits() -> None:
    state = _state(10, [60.0])
    _cut_to_budget(state, 5.0)  # 240 s left at 60 s an epoch: 4 more
    assert state["planned_epochs"] == 5 and state["budget_cut"] and state["full_epochs"] == 10


def test_a_plan_cut_by_a_burst_of_load_grows_back_when_the_pace_returns() -> None:
    state = _state(40, [60.0, 60.0, 180.0, 180.0])  # two epochs beside other work
    _cut_to_budget(state, 30.0)  # 1,320 s left at the median 180 s: 7 more
    assert state["planned_epochs"] == 4 + 7 and state["budget_cut"]
    for _ in range(2):  # the load is gone
        state["history"].append({"epoch": state["epoch"] + 1, "epoch_s": 60.0})
        state["epoch"] += 1
        state["elapsed_s"] += 60.0
        _cut_to_budget(state, 30.0)
    assert state["planned_epochs"] == 6 + int((1800 - 600) // 60)  # 20 more at 60 s
    assert state["budget_cut"]  # still short of the 40 asked


def test_the_plan_never_grows_past_what_was_asked_nor_below_what_is_done() -> None:
    fast = _state(10, [1.0, 1.0])
    _cut_to_budget(fast, 60.0)
    assert fast["planned_epochs"] == 10 and not fast["budget_cut"]
    spent = _state(10, [100.0, 100.0, 100.0])
    _cut_to_budget(spent, 1.0)  # the budget is already used up
    assert spent["planned_epochs"] == 3 and spent["budget_cut"]


def test_without_a_budget_the_plan_is_left_alone() -> None:
    state = _state(10, [600.0])
    _cut_to_budget(state, None)
    assert state["planned_epochs"] == 10 and not state["budget_cut"] and "full_epochs" not in state
