"""The collector's page: one self-contained HTML file, no external assets (fleets run
offline), built once from web/page.html with page.css and page.js inlined. It shows one
fleet over one range, both picked on the page and kept in its address
(`/?fleet=/zk-sensor&range=week`) so a view can be bookmarked or linked, and it fetches
only what is drawn: the range's few hundred points (series.py) and the fleet's newest
rounds, so it stays quick however many are stored.

Each round shows its fleet incarnation (8 characters, the full id on hover), and where a
fleet's incarnation changes the table has a marker row and the chart a dashed line: the
namespace was rebuilt, and round numbers and epochs started again from 0."""

import base64
import hashlib
import html
import re
from importlib.resources import files

from zk_sensor.collector.series import RANGES

TABLE_ROUNDS = 20
REFRESH_SECONDS = 5
DEFAULT_RANGE = "hour"


def asset(name: str) -> str:
    """A file of web/, shipped in the package (pyproject.toml's package data) and read
    once, at import: the page it goes into is the same for every request."""
    return (files("zk_sensor.collector") / "web" / name).read_text(encoding="utf-8")


def fill_static(template: str) -> str:
    """Everything but the host name, which is the one part that varies (and is escaped);
    the script and the style are then fixed text, so their hashes are too. They go in
    last, so that no placeholder is looked for inside them."""
    options = "".join(f'<option value="{name}">{name}</option>' for name in RANGES)
    return (template.replace("__RANGES__", options)
            .replace("__TABLE__", str(TABLE_ROUNDS))
            .replace("__REFRESH__", str(REFRESH_SECONDS))
            .replace("__DEFAULT__", DEFAULT_RANGE)
            .replace("__STYLE__", asset("page.css"))
            .replace("__SCRIPT__", asset("page.js")))


def source_hash(page: str, tag: str) -> str:
    body = re.search(f"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
    assert body is not None
    digest = hashlib.sha256(body.group(1).encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


PAGE = fill_static(asset("page.html"))
# The page may run its own script and style only (by hash: no 'unsafe-inline'), fetch
# only from this collector, and be framed by nobody: an injected tag runs nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"script-src {source_hash(PAGE, 'script')}; "
    f"style-src {source_hash(PAGE, 'style')}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'")


def render_page(hostname: str) -> str:
    return PAGE.replace("__HOST__", html.escape(hostname))
