"""The collector's page in a real headless Chromium: chart and table with the right values,
and a screenshot kept under test-output/ for a person to look at."""

import html
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from test_collector import a_round, post_round, stored

from fleet import CollectorProcess, Fleet, wait_for

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
    line = re.search(r'<polyline id="mean-line"[^>]*data-count="(\d+)"[^>]*points="([^"]+)"',
                     dom)
    assert line and line.group(1) == "5" and len(line.group(2).split()) == 5
    assert '<polygon id="band"' in dom
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
