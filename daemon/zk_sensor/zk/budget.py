"""Every loop step has a budget for ZooKeeper: a call waits at most `deadline`, and no
more than what is left of the step's budget, so a step that makes many calls to a slow
server gives up as a whole (an unknown outcome, which every call site handles) instead of
adding up deadlines past the watchdog. Shared by the real client and the in-memory one."""

import time

from zk_sensor.zk.errors import StepBudgetSpent


class StepBudget:
    """The deadline of the next call, within the step's budget (`begin_step`)."""

    deadline: float
    step_ends: float | None = None

    def begin_step(self, budget: float | None) -> None:
        self.step_ends = None if budget is None else time.monotonic() + budget

    def timeout(self) -> float:
        if self.step_ends is None:
            return self.deadline
        left = self.step_ends - time.monotonic()
        if left <= 0:
            raise StepBudgetSpent("this loop step's time for ZooKeeper is spent")
        return min(self.deadline, left)
