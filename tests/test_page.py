"""The collector's page in a real headless Chromium: chart and table with the right values,
the fleet and range pickers used as a person uses them (through the DevTools protocol),
and screenshots kept under test-output/ for a person to look at."""

import base64
import html
import json
import math
import os
import re
import select
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from zk_sensor.collector.store import Round, Store
from zk_sensor.testing.collector import CollectorProcess, a_round, call, post_round, stored
from zk_sensor.testing.fleet import Fleet, wait_for

OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def chromium(url: str, profile: Path, *extra: str) -> str:
    """Chromium as the probe of this machine runs it: no sandbox (root), no network
    chatter, a fresh profile; virtual time lets the page's fetches finish first."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--virtual-time-budget=4000", "--window-size=1200,1000", *extra, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def table(dom: str) -> list[tuple[str, list[str]]]:
    """Every row of the table's body: its attributes and the text of its cells."""
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [(attrs, [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)])
            for attrs, row in re.findall(r"<tr([^>]*)>(.*?)</tr>", body)]


def cells(dom: str) -> list[list[str]]:
    """The rounds' rows, without the marker rows."""
    return [row for attrs, row in table(dom) if not attrs]


def axis_labels(dom: str) -> list[str]:
    axis = dom.split('<g id="time-axis">', 1)[1].split("</g>", 1)[0]
    return [html.unescape(label) for label in re.findall(r'class="tick"[^>]*>([^<]+)<', axis)]


def test_page_shows_chart_and_table(collector: CollectorProcess, tmp_path: Path) -> None:
    means = [78.5, 80.25, 83.0, 79.75, 81.5]
    for number, mean in enumerate(means, start=1):
        assert post_round(collector, a_round(number, epoch=2, mean=mean))[0] == 201
    dom = chromium(collector.url("/"), tmp_path / "profile", "--dump-dom")
    assert 'data-loaded="yes"' in dom
    rows = cells(dom)
    assert [row[1] for row in rows] == ["5", "4", "3", "2", "1"]
    assert [row[2] for row in rows] == [f"{m:.2f}" for m in reversed(means)]
    assert rows[0][3:] == ["79.50", "83.50", "3", "2", "2", "-"]
    series = call(collector.url("/api/series?fleet=/f&range=hour"))[1]
    line = re.search(r'<polyline id="mean-line"[^>]*data-count="(\d+)" data-rounds="(\d+)"'
                     r'[^>]*points="([^"]+)"', dom)
    assert line, dom
    assert int(line.group(1)) == len(series["points"]) == len(line.group(3).split())
    assert line.group(2) == "5", "the hour's buckets hold the five rounds"
    assert '<polygon id="band"' in dom and 'data-range="hour"' in dom
    assert axis_labels(dom), "the time axis is labelled"
    assert 'id="last-mean">81.50<' in dom and 'id="total">5<' in dom

    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "collector-page.png"
    chromium(collector.url("/"), tmp_path / "profile2", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


def test_page_marks_a_new_fleet_incarnation(collector: CollectorProcess,
                                            tmp_path: Path) -> None:
    """The namespace was rebuilt: rounds 1-2 again, epoch 1 again, under a new id."""
    old, new = uuid.uuid4().hex, uuid.uuid4().hex
    for number in (1, 2, 3):
        assert post_round(collector, a_round(number, epoch=7, incarnation=old))[0] == 201
    for number in (1, 2):
        assert post_round(collector, a_round(number, epoch=1, incarnation=new))[0] == 201
    dom = chromium(collector.url("/"), tmp_path / "profile", "--dump-dom")
    assert 'data-loaded="yes"' in dom
    shown = [(row[1], row[8]) if not attrs else row[0] for attrs, row in table(dom)]
    assert shown == [("2", new[:8]), ("1", new[:8]), f"new fleet incarnation {new[:8]}",
                     ("3", old[:8]), ("2", old[:8]), ("1", old[:8])]
    assert f'<td title="{new}">{new[:8]}</td>' in dom
    assert len(re.findall(r'<tr class="incarnation-change">', dom)) == 1
    changes = re.findall(r'<line class="incarnation-change" data-incarnation="(\w+)"', dom)
    assert changes == [new]

    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "collector-page-incarnation.png"
    chromium(collector.url("/"), tmp_path / "profile2", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


def test_three_daemons_deliver_to_a_real_collector(fleet: Fleet, collector: CollectorProcess,
                                                    tmp_path: Path) -> None:
    fleet.api_url = collector.url("/api/rounds")
    fleet.start_ready("1", "2", "3")
    def full_rounds() -> list[dict]:
        rows = [r for r in stored(collector) if r["count"] == 3]
        return rows if len(rows) >= 3 else []

    rows = wait_for(full_rounds, 30, "three full rounds stored")
    assert all(r["fleet"] == fleet.namespace and r["source"] == "json" for r in rows)
    rounds = [r["round"] for r in stored(collector)]
    assert rounds == sorted(set(rounds), reverse=True)
    dom = chromium(collector.url("/"), tmp_path / "profile", "--dump-dom")
    shown = {int(row[1]) for row in cells(dom)}
    assert {r["round"] for r in rows} <= shown


# ------------------------------------------------------------- the pickers, as a person

class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (it reads commands on
    fd 3 and answers on fd 4, NUL-terminated JSON), so that a test can pick from the
    page's selects and wait for it to redraw, as a person would."""

    def __init__(self, profile: Path) -> None:
        commands_read, self.commands = os.pipe()
        self.answers, answers_write = os.pipe()

        def on_fds_3_and_4() -> None:
            os.dup2(commands_read, 3)
            os.dup2(answers_write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1200,1000",
             "about:blank"],
            pass_fds=(3, 4), preexec_fn=on_fds_3_and_4, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(answers_write)
        self.buffer = b""
        self.last_id = 0
        self.session = None
        target = next(t for t in self.send("Target.getTargets")["targetInfos"]
                      if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target["targetId"],
                                 flatten=True)["sessionId"]

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self.last_id:
                    assert "error" not in answer, answer
                    return answer["result"]
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.answers], [], [], left)[0], method
            chunk = os.read(self.answers, 1 << 16)
            assert chunk, "chromium closed the pipe"
            self.buffer += chunk

    def evaluate(self, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer
        return answer["result"].get("value")

    def until(self, expression: str, what: str) -> Any:
        return wait_for(lambda: self.evaluate(expression), 20, what, interval=0.1)

    def open(self, url: str) -> None:
        """Navigate, and wait for the new page's first refresh (not the old page's)."""
        self.evaluate("document.body && delete document.body.dataset.loaded")
        self.send("Page.navigate", url=url)
        self.until("document.body && document.body.dataset.loaded === 'yes'", "the page")

    def pick(self, picker: str, value: str) -> None:
        """What choosing an option does: the value changes, then a change event."""
        self.evaluate(f"(() => {{ const s = document.getElementById({json.dumps(picker)}); "
                      f"s.value = {json.dumps(value)}; "
                      f"s.dispatchEvent(new Event('change')); }})()")

    def chart(self) -> dict[str, Any]:
        return self.evaluate("""(() => {
            const line = document.getElementById("mean-line");
            return {range: document.getElementById("chart").dataset.range,
                    points: Number(line.dataset.count), rounds: Number(line.dataset.rounds),
                    labels: [...document.querySelectorAll("#time-axis .tick")]
                              .map(t => t.textContent),
                    fleet: document.getElementById("fleet").value,
                    fleets: [...document.getElementById("fleet").options].map(o => o.value),
                    total: document.getElementById("total").textContent,
                    table: [...document.querySelectorAll("#rounds tbody tr")]
                              .map(r => r.cells[2].textContent),
                    address: location.search}; })()""")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)
        os.close(self.commands)
        os.close(self.answers)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(tmp_path / "cdp-profile")
    yield opened
    opened.close()


def history(db: Path, now: float) -> None:
    """Fleet /f: a round an hour for 400 days, then one every 30 s for the last hour;
    fleet /g: three rounds in the last hour. Written before the collector starts."""
    store = Store(db)
    store.db.execute("PRAGMA synchronous=OFF")
    hourly = [now - 400 * 86400 + 3600 * n for n in range(400 * 24 - 1)]
    recent = [now - 3600 + 30 * n for n in range(1, 120)]
    for number, at in enumerate(hourly + recent):
        mean = 80 + 3 * math.sin(number / 24)
        store.add(Round(mean=mean, min=mean - 2, max=mean + 2, count=3, source="json",
                        fleet="/f", round=number, epoch=1), now=at)
    for number, mean in enumerate([11.0, 12.0, 13.0]):
        store.add(Round(mean=mean, source="json", fleet="/g", round=number, epoch=1),
                  now=now - 300 + number)
    store.close()


def test_picking_a_range_and_a_fleet_redraws_the_chart_with_a_labelled_time_axis(
        tmp_path: Path, browser: Browser) -> None:
    now = time.time()
    history(tmp_path / "rounds.sqlite3", now)
    collector = CollectorProcess(tmp_path / "rounds.sqlite3", tmp_path / "c.log").start()
    try:
        browser.open(collector.url("/"))
        hour = browser.chart()
        assert (hour["range"], hour["fleet"], hour["fleets"]) == ("hour", "/f", ["/f", "/g"])
        assert hour["rounds"] == 119 and 100 <= hour["points"] <= 120
        # Times of day; a tick that falls on midnight names the day instead ("Dec 7").
        times = [label for label in hour["labels"] if re.search(r"\d:\d\d", label)]
        days = [label for label in hour["labels"] if re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", label)]
        assert len(times) >= 4 and len(days) <= 1, hour["labels"]
        assert len(times) + len(days) == len(hour["labels"]) >= 5, hour["labels"]

        browser.pick("range", "year")
        year = browser.until("document.getElementById('chart').dataset.range === 'year'",
                             "the year drawn") and browser.chart()
        in_year = call(collector.url("/api/series?fleet=/f&range=year"))[1]
        assert year["rounds"] == sum(p["rounds"] for p in in_year["points"]) > 8000
        assert year["points"] == len(in_year["points"]) >= 360
        assert len(year["labels"]) >= 11 and not set(year["labels"]) & set(hour["labels"])
        assert year["address"] == "?fleet=%2Ff&range=year", "kept in the address"
        OUTPUT.mkdir(exist_ok=True)
        browser.screenshot(OUTPUT / "collector-page-year.png")

        browser.pick("fleet", "/g")
        browser.until("document.getElementById('total').textContent === '3'", "fleet /g")
        fleet_g = browser.chart()
        assert (fleet_g["rounds"], fleet_g["table"]) == (3, ["13.00", "12.00", "11.00"])

        browser.open(collector.url(f"/?fleet={quote('/f')}&range=week"))
        week = browser.chart()
        assert (week["fleet"], week["range"]) == ("/f", "week")
        in_week = call(collector.url("/api/series?fleet=/f&range=week"))[1]
        assert week["rounds"] == sum(p["rounds"] for p in in_week["points"]) > 119
        assert 7 <= len(week["labels"]) <= 8
    finally:
        collector.stop()


def test_an_empty_collector_says_so(collector: CollectorProcess, browser: Browser) -> None:
    browser.open(collector.url("/"))
    assert browser.evaluate("document.getElementById('chart').textContent").endswith(
        "no rounds yet")
    assert browser.chart()["fleets"] == []
