"""Many cells, one verdict: a merged JUnit, a Markdown summary (the CI job summary), an HTML
page with the cell x test table and the P2P verdicts of every cell. Cells without usable results
(lost: broken, or planned and missing) head the summary: a run that lost them did not pass."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from pathlib import Path

from .cells import CellResults, LostCell

ORDER = ("failed", "error", "xpassed", "passed", "xfailed", "skipped")
BAD = {"failed", "error", "xpassed"}
COLOURS = {
    "passed": "#c8e6c9",
    "failed": "#ffcdd2",
    "error": "#ffab91",
    "xpassed": "#ffcdd2",
    "xfailed": "#fff9c4",
    "skipped": "#eeeeee",
}


def _lost_suite(cell: LostCell) -> ET.Element:
    # a JUnit reader that only counts failures must not see a lost cell as green
    suite = ET.Element("testsuite", name=f"{cell.id}: no results", tests="1", errors="1", failures="0", skipped="0")
    case = ET.SubElement(suite, "testcase", classname=cell.id, name="results")
    ET.SubElement(case, "error", message=cell.reason)
    return suite


def _drop_case_properties(case: ET.Element) -> None:
    """xunit2 has properties per suite only; cells of older runs put some per case (run.json
    holds the same facts)."""
    for props in case.findall("properties"):
        case.remove(props)


def merged_junit(cells: list[CellResults], lost: tuple[LostCell, ...] = ()) -> ET.ElementTree:
    """One <testsuites>: each cell's suites renamed after the cell, each case's classname too,
    so the same test on two cells stays two cases; each lost cell one erroring case."""
    root = ET.Element("testsuites", name="p2p-testbed matrix")
    for lost_cell in lost:
        root.append(_lost_suite(lost_cell))
    for cell in cells:
        if cell.junit is None:
            continue
        got = cell.junit
        suites = [got] if got.tag == "testsuite" else list(got.iter("testsuite"))
        for suite in suites:
            suite.set("name", f"{cell.id}: {suite.get('name', 'pytest')}")
            for case in suite.iter("testcase"):
                case.set("classname", f"{cell.id}.{case.get('classname', '')}")
                _drop_case_properties(case)
            root.append(suite)
    ET.indent(root)
    return ET.ElementTree(root)


def failing(cells: list[CellResults]) -> list[tuple[str, str, str]]:
    return [
        (c.id, nodeid, outcome) for c in cells for nodeid, outcome in sorted(c.run.outcomes.items()) if outcome in BAD
    ]


def _headline(bad: list[tuple[str, str, str]], lost: tuple[LostCell, ...]) -> list[str]:
    lines = [f"**{len(lost)} cell(s) without results**"] if lost else []
    lines += [f"**{len(bad)} failing result(s)**"] if bad else []
    return lines or ["**Every cell passed.**"]


def _lost_rows(lost: tuple[LostCell, ...], unplanned: tuple[str, ...]) -> list[str]:
    out = []
    if lost:
        out += ["", "## Cells without results", "", "| cell | why |", "|---|---|"]
        out += [f"| {c.id} | {c.reason.replace('|', '/')} |" for c in lost]
    if unplanned:
        out += ["", "## Cells not in the plan (merged all the same)", ""]
        out += [f"- {cell_id}" for cell_id in unplanned]
    return out


def markdown(cells: list[CellResults], lost: tuple[LostCell, ...] = (), unplanned: tuple[str, ...] = ()) -> str:
    out = ["# p2p-testbed matrix", "", "| cell | " + " | ".join(ORDER) + " | new splats | kernel |"]
    out.append("|---" * (len(ORDER) + 3) + "|")
    for c in cells:
        counts = c.counts()
        splats = sum(c.new_splats().values())
        kernel = "<br>".join(c.run.kernels) or "-"
        out.append(f"| {c.id} | " + " | ".join(str(counts.get(o, 0)) for o in ORDER) + f" | {splats} | {kernel} |")
    bad = failing(cells)
    out += ["", *_headline(bad, lost)]
    out += _lost_rows(lost, unplanned)
    if bad:
        out += ["", "| cell | test | outcome |", "|---|---|---|"]
        out += [f"| {cell} | `{nodeid}` | {outcome} |" for cell, nodeid, outcome in bad]
    splat_rows = [(c.id, sig, n) for c in cells for sig, n in c.new_splats().items()]
    if splat_rows:
        out += ["", "## New splats", "", "| cell | signature | count |", "|---|---|---|"]
        out += [f"| {cell} | `{sig}` | {n} |" for cell, sig, n in splat_rows]
    verdicts = [(c.id, key, v) for c in cells for key, v in sorted(c.run.verdicts.items())]
    if verdicts:
        out += ["", "## P2P verdicts", "", "| cell | pair | map type | expected | observed |", "|---|---|---|---|---|"]
        for cell, (topo, provider, client, direction), (map_type, observed, expected) in verdicts:
            flag = "" if observed == expected else " **DISAGREES**"
            out.append(
                f"| {cell} | {topo} {provider}->{client} {direction} | {map_type} | {expected} | {observed}{flag} |"
            )
    return "\n".join(out) + "\n"


def html_page(cells: list[CellResults], lost: tuple[LostCell, ...] = (), unplanned: tuple[str, ...] = ()) -> str:
    tests = sorted({nodeid for c in cells for nodeid in c.run.outcomes})
    head = "".join(f"<th>{html.escape(c.id)}</th>" for c in cells)
    rows = []
    for nodeid in tests:
        tds = []
        for c in cells:
            outcome = c.run.outcomes.get(nodeid)
            colour = COLOURS.get(outcome or "", "#ffffff")
            tds.append(f'<td style="background:{colour}">{outcome or ""}</td>')
        rows.append(f"<tr><td><code>{html.escape(nodeid)}</code></td>{''.join(tds)}</tr>")
    summary = markdown(cells, lost, unplanned)
    title = f"{len(cells)} cells, {len(tests)} tests" + (f", {len(lost)} cells without results" if lost else "")
    return (
        "<!doctype html><meta charset=utf-8><title>p2p-testbed matrix</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style>"
        f"<h1>p2p-testbed matrix: {title}</h1>"
        f"<pre>{html.escape(summary)}</pre>"
        f"<h2>cell x test</h2><table><tr><th>test</th>{head}</tr>{''.join(rows)}</table>"
    )


def write_all(
    cells: list[CellResults], out: Path, lost: tuple[LostCell, ...] = (), unplanned: tuple[str, ...] = ()
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"junit": out / "junit.xml", "markdown": out / "summary.md", "html": out / "index.html"}
    merged_junit(cells, lost).write(paths["junit"], encoding="utf-8", xml_declaration=True)
    paths["markdown"].write_text(markdown(cells, lost, unplanned))
    paths["html"].write_text(html_page(cells, lost, unplanned))
    return paths
