"""The collector's page: one self-contained HTML file, no external assets (fleets run
offline). It shows one fleet over one range, both picked on the page and kept in its
address (`/?fleet=/zk-sensor&range=week`) so a view can be bookmarked or linked, and it
fetches only what is drawn: the range's few hundred points (series.py) and the fleet's
newest rounds, so it stays quick however many are stored.

Each round shows its fleet incarnation (8 characters, the full id on hover), and where a
fleet's incarnation changes the table has a marker row and the chart a dashed line: the
namespace was rebuilt, and round numbers and epochs started again from 0."""

import base64
import hashlib
import html
import re

from zk_sensor.collector.page_script import SCRIPT
from zk_sensor.collector.series import RANGES

TABLE_ROUNDS = 20
REFRESH_SECONDS = 5
DEFAULT_RANGE = "hour"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zk-collector on __HOST__</title>
<style>
  :root { --fg: #1d2430; --muted: #6b7380; --line: #2563eb; --band: #bfd3fb; --bg: #f7f8fa; }
  body { font: 15px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg);
         margin: 0 auto; max-width: 1000px; padding: 24px; }
  header { display: flex; justify-content: space-between; align-items: baseline; }
  h1 { font-size: 22px; margin: 0; }
  .muted { color: var(--muted); }
  .pickers { display: flex; gap: 16px; margin-top: 12px; }
  select { font: inherit; padding: 2px 6px; }
  .cards { display: flex; gap: 12px; margin: 16px 0; }
  .card { background: #fff; border-radius: 8px; padding: 12px 16px; flex: 1;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  .card b { display: block; font-size: 24px; }
  svg { background: #fff; border-radius: 8px; box-shadow: 0 1px 2px rgba(0,0,0,.08);
        width: 100%; height: 300px; }
  table { width: 100%; border-collapse: collapse; background: #fff; margin-top: 16px;
          border-radius: 8px; overflow: hidden; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  th, td { padding: 6px 10px; text-align: right; border-bottom: 1px solid #eef0f3; }
  th:first-child, td:first-child { text-align: left; }
  th { background: #f0f2f5; font-weight: 600; }
  tr.incarnation-change td { text-align: left; background: #fff4e0; color: #8a4b00;
                             font-weight: 600; }
</style>
</head>
<body>
<header>
  <h1>Fleet means</h1>
  <span class="muted">served by <b id="host">__HOST__</b></span>
</header>
<div class="pickers">
  <label>fleet <select id="fleet"></select></label>
  <label>range <select id="range">__RANGES__</select></label>
</div>
<div class="cards">
  <div class="card"><span class="muted">last mean</span><b id="last-mean">-</b></div>
  <div class="card"><span class="muted">last round</span><b id="last-round">-</b></div>
  <div class="card"><span class="muted">rounds stored</span><b id="total">-</b></div>
  <div class="card"><span class="muted">updated</span><b id="updated">-</b></div>
</div>
<svg id="chart" viewBox="0 0 1000 300" preserveAspectRatio="none" role="img"
     aria-label="mean over time, with its min..max band"></svg>
<table id="rounds">
  <thead><tr><th>received</th><th>round</th><th>mean</th><th>min</th><th>max</th>
  <th>devices</th><th>leader</th><th>epoch</th><th>incarnation</th></tr></thead>
  <tbody></tbody>
</table>
<script>
"use strict";
const TABLE_ROUNDS = __TABLE__, REFRESH_MS = __REFRESH__ * 1000, DEFAULT_RANGE = "__DEFAULT__";
__SCRIPT__
</script>
</body>
</html>
"""


def render_page(hostname: str) -> str:
    return PAGE.replace("__HOST__", html.escape(hostname))


def fill_static(page: str) -> str:
    """Everything but the host name, which is the one part that varies (and is escaped);
    the script and the style are then fixed text, so their hashes are too."""
    options = "".join(f'<option value="{name}">{name}</option>' for name in RANGES)
    return (page.replace("__SCRIPT__", SCRIPT)
            .replace("__RANGES__", options)
            .replace("__TABLE__", str(TABLE_ROUNDS))
            .replace("__REFRESH__", str(REFRESH_SECONDS))
            .replace("__DEFAULT__", DEFAULT_RANGE))


def source_hash(page: str, tag: str) -> str:
    body = re.search(f"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
    assert body is not None
    digest = hashlib.sha256(body.group(1).encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


PAGE = fill_static(PAGE)
# The page may run its own script and style only (by hash: no 'unsafe-inline'), fetch
# only from this collector, and be framed by nobody: an injected tag runs nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"script-src {source_hash(PAGE, 'script')}; "
    f"style-src {source_hash(PAGE, 'style')}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'")
