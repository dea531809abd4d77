"""What a node does while it leads, one bounded piece per loop step.

The daemon's loop calls in here; nothing here runs on another thread or blocks beyond
the step's ZooKeeper budget. Every leader write has three outcomes and each is handled:
committed (go on), refused (the epoch moved: step down; anything else moved: re-read),
unknown (a timeout or a lost connection: it may have landed, so re-read the fleet's
coordination znodes before acting again, and only then know whether the round closed).

Stepping down forgets everything learnt as leader but the collector's answers (2xx, or a
refusal for good of the round itself): the next leader, maybe this node again, reloads
the outbox from ZooKeeper. A 409 is not an answer about the round but about this office
(the collector has seen a newer epoch), so it only makes the node step down and re-check.
Taking office again after a step-down backs off, so a fault that defeats every attempt
costs a few epochs a minute, not hundreds a second. A step that ends the office returns
why (a StepDown: fleet's Deposed when the fleet's znodes say so, Unseated otherwise), and
the loop then evaluates the election again.
"""

import contextlib
import logging
import time
from collections.abc import Callable
from enum import StrEnum

from zk_sensor.fleet.barrier import BarrierView
from zk_sensor.fleet.config_watch import LiveConfig
from zk_sensor.fleet.coordination import Repairs, plan_repairs, read_fleet_state
from zk_sensor.fleet.election import live_nodes
from zk_sensor.fleet.layout import Layout
from zk_sensor.fleet.lease import Lease
from zk_sensor.fleet.office import (
    Deposed,
    Office,
    repair_in_office,
    standing_problem,
    take_office,
)
from zk_sensor.fleet.outbox import Loaded, Outbox, OutboxStats, Outcome
from zk_sensor.fleet.rounds import (
    Closing,
    NotReleased,
    log_round,
    prepare_closing,
    refusal,
    slowest_device,
)
from zk_sensor.node.clock import Clock
from zk_sensor.node.delivery import Courier, one_line
from zk_sensor.node.schedule import RoundClock
from zk_sensor.zk.errors import (
    ZK_ERRORS,
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    first_failure,
)
from zk_sensor.zk.interface import Zk

log = logging.getLogger("zk_sensor")

OFFICE_BACKOFF_FIRST = 0.5
OFFICE_BACKOFF_MAX = 8.0
FIRST_ROUND_SETTLE = 0.5


class Unseated(StrEnum):
    """Why a leader steps down when no coordination znode says it was deposed: what this
    node saw itself (its link, its place in line) or was told by someone else (ZooKeeper
    refusing its repair, the collector fencing its epoch). A str: its text is the log
    line's, where no more detailed one is given."""

    CONNECTION_SUSPENDED = "connection suspended; leadership unknown until reconnected"
    SESSION_LOST = "session lost"
    NOT_FIRST_IN_LINE = "no longer first in line"
    REPAIR_REFUSED = "repair refused"
    COLLECTOR_FENCED = "the collector accepted a newer epoch of this fleet"


# What a leader step returns when it ended the office: the loop must then evaluate the
# election again. Deposed when the fleet's znodes say so (fleet/office.py), Unseated else.
StepDown = Deposed | Unseated


class Leader:
    """The office this node holds, and everything it learnt while holding it, kept apart
    from the loop so that stepping down is one call that forgets it all at once (but the
    collector's answers) and no stale lease, clock or device list outlives the office."""

    def __init__(self, zk: Zk, layout: Layout, node_id: str, outbox_limit: int,
                 config: LiveConfig, view: BarrierView, courier: Courier,
                 session_timeout: float, devices_changed: Callable[[object], None],
                 wall_clock: Clock) -> None:
        self.zk = zk
        self.wall_clock = wall_clock
        self.devices_changed = devices_changed
        self.layout = layout
        self.node_id = node_id
        self.config = config
        self.view = view
        self.courier = courier
        self.office: Office | None = None
        self.last_epoch: int | None = None
        self.lease = Lease()
        self.lease.set_session_timeout(session_timeout)
        self.clock: RoundClock | None = None
        self.devices: list[str] | None = None
        self.devices_stale = True
        self.outbox = Outbox(layout, outbox_limit)
        self.need_reload = False
        self.unsure_round: int | None = None
        self.next_attempt = 0.0
        self.backoff = OFFICE_BACKOFF_FIRST
        self.dropping = False
        self.rounds_led = 0
        self.garbage_readings = 0
        self.delivered = 0
        self.refused = 0
        self.round_work = 0.0
        self.round_spread = 0.0

    def fresh(self, now: float) -> bool:
        return self.office is not None and self.lease.fresh(now)

    def deadlines(self) -> list[float]:
        if self.office is None:
            return [self.next_attempt]
        due = [self.lease.renew_at]
        if self.clock is not None:
            due.append(self.clock.next_close)
        return due

    # Taking and leaving office.

    def try_office(self, candidate: str) -> bool:
        """True once in office; False while backing off or after a failed attempt. The
        rest (outbox, barrier, clock) is loaded by the next step's reload."""
        if time.monotonic() < self.next_attempt:
            return False
        try:
            state = read_fleet_state(self.zk, self.layout)
            office, repairs = take_office(self.zk, self.layout, candidate, self.node_id, state,
                                          self.remembered_round())
        except ZK_ERRORS as error:
            self.back_off(f"could not take office: {one_line(error) or type(error).__name__}")
            return False
        self.note_repairs(repairs)
        self.office = office
        self.last_epoch = office.epoch
        self.lease.renew(office.taken_at)
        self.need_reload = True
        return True

    def back_off(self, reason: str) -> None:
        log.warning("%s; next try in %.1f s", reason, self.backoff)
        self.next_attempt = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, OFFICE_BACKOFF_MAX)

    def step_down(self, reason: str, failed: bool = True) -> None:
        """`reason` is the log line's text (a StepDown member is one). A failure backs the
        next attempt at office off; a handover is no failure."""
        if self.office is None:
            return
        log.log(logging.WARNING if failed else logging.INFO,
                "stepping down as leader (epoch %d): %s", self.office.epoch, reason)
        self.office = None
        self.lease.end()
        self.clock = None
        self.devices = None
        self.devices_stale = True
        self.outbox.clear()
        self.courier.clear()
        self.need_reload = False
        self.unsure_round = None
        self.dropping = False
        if failed:
            self.next_attempt = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, OFFICE_BACKOFF_MAX)

    def deposed(self, why: StepDown, said: str = "") -> StepDown:
        """Step down for `why`, logged as `said` (or the reason's own text), and hand the
        reason back for the loop, which must evaluate the election again."""
        self.step_down(said or why)
        return why

    def between_rounds(self) -> bool:
        """Nothing of this office is in doubt: its clock runs, the coordination znodes are
        as it read them, and its last release's outcome is known."""
        return self.clock is not None and not self.need_reload and self.unsure_round is None

    def remembered_round(self) -> int | None:
        return self.view.state.round if self.view.state is not None else None

    def note_repairs(self, repairs: Repairs) -> None:
        for note in repairs.notes:
            log.error("%s", note)

    # One step in office.

    def step(self, link_up: bool) -> StepDown | None:
        """Why this step ended the office (the node must evaluate the election again), or
        None while it stands."""
        if self.office is None:
            return None
        if time.monotonic() >= self.lease.renew_at:
            ended = self.confirm()
            if ended is not None:
                return ended
        if self.need_reload:
            ended = self.reload()
            if ended is not None:
                return ended
        if not (link_up and self.fresh(time.monotonic())) or self.clock is None:
            return None
        if self.devices_stale:
            self.refresh_devices()
        if self.outbox.answered:
            ended = self.clean_outbox()
            if ended is not None:
                return ended
        if self.clock.due(time.monotonic()):
            return self.close_round(self.clock)
        return None

    def confirm(self) -> StepDown | None:
        """Renew the lease with a read the quorum stands behind, and check on the way that
        nobody else took office (the epoch znode still has our version)."""
        assert self.office is not None
        sent_at = time.monotonic()
        stat = self.zk.synced_exists(self.layout.epoch)
        if stat is None:
            return self.deposed(Deposed.EPOCH_GONE)
        if not self.office.holds(stat.version, stat.czxid):
            return self.deposed(Deposed.EPOCH_MOVED, "another leader took office (epoch "
                                                     f"znode version {stat.version})")
        self.lease.renew(sent_at)
        return None

    def reload(self) -> StepDown | None:
        """Re-read the coordination znodes, repair what is broken, and resolve a round
        whose release had an unknown outcome."""
        assert self.office is not None
        state = read_fleet_state(self.zk, self.layout)
        problem = standing_problem(self.office, state)
        if problem is not None:
            return self.deposed(problem)
        repairs = plan_repairs(state, self.remembered_round(), self.office.epoch)
        # Logged before the write: a repair whose reply is lost may still land, and the
        # next reload would find nothing left to say.
        self.note_repairs(repairs)
        try:
            repair_in_office(self.zk, self.layout, self.office, state, repairs)
        except ZK_ERRORS as error:
            if not isinstance(error, BadVersionError | NoNodeError | NodeExistsError):
                raise
            return self.deposed(Unseated.REPAIR_REFUSED, "could not repair the coordination "
                                                         f"znodes: {type(error).__name__}")
        data, stat = self.zk.get(self.layout.barrier)
        self.view.accept(data, stat)
        released_wall = stat.mtime / 1000.0 + self.office.clock_offset
        loaded = state.pending if state.pending is not None and repairs.outbox is None \
            else Loaded([], [], repairs.outbox or OutboxStats())
        self.take_outbox(loaded)
        if self.clock is None:
            self.start_clock(released_wall)
        self.resolve_unsure_round()
        self.need_reload = False
        return None

    def take_outbox(self, loaded: Loaded) -> None:
        """The outbox as ZooKeeper holds it, handed to the courier minus answered rounds."""
        first_load = self.clock is None
        self.outbox.load(loaded)
        self.courier.replace([a for a in loaded.rounds if a.round not in self.outbox.answered])
        if first_load and loaded.rounds:
            log.warning("inherited %d undelivered rounds (%d..%d); delivering them first",
                        len(loaded.rounds), loaded.rounds[0].round, loaded.rounds[-1].round)
        for name in loaded.garbage:
            log.error("outbox entry %s is not a round; removing it", name)
            with contextlib.suppress(NoNodeError):
                self.zk.delete(f"{self.layout.outbox}/{name}")

    def start_clock(self, released_wall: float) -> None:
        """The first round closes one period after the barrier last moved, on the server's
        clock as this node sees it (taking office measured the offset), and no sooner than
        FIRST_ROUND_SETTLE periods after taking office: when the office changed hands
        because ZooKeeper itself was away, every device was cut off too and must reconnect
        and measure the open round first. Closed at once, it would be released with no
        readings, and its number would be missing at the collector."""
        assert self.office is not None
        period = self.config.sampling_period
        state = self.view.state
        settle = FIRST_ROUND_SETTLE * period - (time.monotonic() - self.office.taken_at)
        wait = min(period, max(0.0, released_wall + period - time.time(), settle))
        self.clock = RoundClock(time.monotonic() + wait, period)
        log.info("I am the leader now (epoch %d, incarnation %s): round %d closes in %.1f s",
                 self.office.epoch, self.office.incarnation[:8],
                 state.round if state is not None else 0, wait)

    def resolve_unsure_round(self) -> None:
        if self.unsure_round is None or self.view.state is None or self.clock is None:
            return
        if self.view.state.round > self.unsure_round:
            log.warning("round %d: its release landed after all (the reply was lost)",
                        self.unsure_round)
            self.clock.advance(time.monotonic())
        else:
            log.warning("round %d: its release did not land; closing it again",
                        self.unsure_round)
        self.unsure_round = None

    def refresh_devices(self) -> None:
        devices = live_nodes(self.zk.children(self.layout.election, watch=self.devices_changed))
        if devices != self.devices:
            log.info("connected devices (%d): %s%s", len(devices), ", ".join(devices),
                     describe_change(self.devices, devices))
        self.devices = devices
        self.devices_stale = False

    def close_round(self, clock: RoundClock) -> StepDown | None:
        office, current = self.office, self.view.state
        assert office is not None
        if current is None:
            self.need_reload = True
            return None
        sent_at = time.monotonic()
        work_started = time.perf_counter()
        closing = prepare_closing(self.zk, self.layout, current, self.view.version,
                                  office.epoch, office.version, office.incarnation,
                                  self.node_id, self.outbox, self.wall_clock.synced())
        try:
            results = self.zk.commit(closing.transaction)
        except ZK_ERRORS as error:
            self.unsure_round = current.round
            self.need_reload = True
            log.warning("round %d: the release's outcome is unknown (%s); re-reading before "
                        "acting again", current.round, one_line(error) or type(error).__name__)
            return None
        match refusal(results):
            case Deposed() as why:
                return self.deposed(why, f"round {current.round} fenced off: {why}")
            case NotReleased() as why:
                log.warning("round %d not closed: %s; re-reading", current.round, why)
                self.need_reload = True
                return None
        self.lease.renew(sent_at)
        spread = slowest_device(closing.readings, self.view.stored_at)
        self.view.accept(closing.released.encode(), results[1])
        self.closed(closing, time.perf_counter() - work_started, spread, clock)
        return None

    def closed(self, closing: Closing, work: float, spread: float, clock: RoundClock) -> None:
        self.rounds_led += 1
        self.garbage_readings += len(closing.collection.garbage)
        self.backoff = OFFICE_BACKOFF_FIRST
        self.round_work = work
        self.round_spread = spread
        log_round(closing, work, spread, set(self.devices) if self.devices is not None else None)
        missed = clock.advance(time.monotonic())
        if missed:
            log.warning("round %d took %.0f ms, past its slot: %d slot(s) of %.1f s skipped",
                        closing.current.round, work * 1000, missed, clock.period)
        self.outbox.released(closing.result, closing.dropped, closing.stats)
        if closing.dropped is not None:
            self.note_drop(closing.dropped)
        if closing.result is not None:
            self.courier.add(closing.result)

    def note_drop(self, round_number: int) -> None:
        self.courier.discard(round_number)
        if not self.dropping:
            self.dropping = True
            log.error("outbox full (%d rounds): dropping the oldest undelivered rounds, "
                      "starting with round %d", self.outbox.limit, round_number)

    def clean_outbox(self) -> StepDown | None:
        """Remove a batch of answered rounds in one fenced transaction."""
        assert self.office is not None
        if not self.outbox.forget_answers_for_gone_rounds():
            return None
        transaction = self.zk.transaction()
        transaction.check(self.layout.epoch, self.office.version)
        batch, stats = self.outbox.add_cleanup(transaction)
        try:
            results = self.zk.commit(transaction)
        except ZK_ERRORS:
            self.need_reload = True
            raise
        failure = first_failure(results)
        if failure is results[0] and failure is not None:
            return self.deposed(Deposed.EPOCH_MOVED,
                                "fenced off while clearing the outbox: the epoch moved")
        if failure is not None:
            self.need_reload = True
            return None
        self.outbox.cleaned(batch, stats)
        if self.dropping and any(outcome == Outcome.DELIVERED for _, outcome in batch):
            self.dropping = False
            log.warning("outbox drained below its limit; %d rounds dropped so far",
                        stats.dropped)
        return None

    # The collector's answers, from the courier through the loop.

    def on_delivery(self, round_number: int, answer: Outcome, detail: str) -> StepDown | None:
        """`answer`: as the courier reports it (never RETRY). A reload between the
        courier's answer and this call handed the round to the courier again; it is taken
        back so the collector does not get it twice."""
        if answer is Outcome.FENCED:
            return self.deposed(Unseated.COLLECTOR_FENCED,
                                f"the collector fenced round {round_number} off ({detail}): "
                                f"it accepted a newer epoch of this fleet; re-checking")
        if answer is Outcome.DELIVERED:
            self.delivered += 1
            log.info("delivered round %d (%s)", round_number, detail)
        else:
            self.refused += 1
            log.error("collector refused round %d for good: %s; dropping it", round_number,
                      detail)
        self.outbox.answer(round_number, answer)
        self.courier.discard(round_number)
        return None


def describe_change(before: list[str] | None, after: list[str]) -> str:
    """The devices that joined and left since the last listing, for its log line."""
    if before is None:
        return ""
    joined = [node for node in after if node not in before]
    left = [node for node in before if node not in after]
    parts = ([f"joined: {', '.join(joined)}"] if joined else []) + (
        [f"left: {', '.join(left)}"] if left else []
    )
    return f" ({'; '.join(parts)})" if parts else ""
