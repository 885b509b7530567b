"""The report's building blocks, each rendered to HTML and to Markdown (`html()`, `md()`), so the
two files say the same. Text is given raw; the renderers escape it (HTML escaping, in Markdown too,
outside fenced code).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import NamedTuple

MAX_TEXT = 4000  # characters of an example rationale / output shown


def e(x) -> str:
    """Escaped text for HTML (None shows as a dash)."""
    return "—" if x is None else html.escape(str(x))


def m(x) -> str:
    """Text for Markdown outside code: HTML-escaped, pipes escaped, on one line."""
    return e(x).replace("|", "\\|").replace("\n", " ")


def _fence(text: str, lang: str = "text") -> str:
    ticks = "`" * max(3, 1 + max((len(t) for t in re.findall(r"`+", text)), default=0))
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None
    tag: str | None = None

    def html(self) -> str:
        anchor = f' id="{e(self.anchor)}"' if self.anchor else ""
        tag = f'<span class="tag">{e(self.tag)}</span>' if self.tag else ""
        return f"<h{self.level}{anchor}>{e(self.text)}{tag}</h{self.level}>"

    def md(self) -> str:
        return "#" * self.level + f" {m(self.text)}" + (f" ({m(self.tag)})" if self.tag else "") + "\n"


@dataclass
class Para:
    text: str
    kind: str = ""  # sub | missing | ok | warn | alert | note
    lead: str = ""  # a bold prefix ("failed:", "offline stand-in:")

    def html(self) -> str:
        lead = f"<b>{e(self.lead)}</b> " if self.lead else ""
        return f'<p class="{self.kind}">{lead}{e(self.text)}</p>' if self.kind else f"<p>{lead}{e(self.text)}</p>"

    def md(self) -> str:
        lead = f"**{m(self.lead)}** " if self.lead else ""
        text = f"_{m(self.text)}_" if self.kind == "missing" else m(self.text)
        return ("> " if self.kind in ("ok", "warn", "alert", "note") else "") + lead + text + "\n"


@dataclass
class Nav:
    links: list[tuple[str, str]]

    def html(self) -> str:
        return "<nav>" + "".join(f'<a href="#{e(a)}">{e(t)}</a>' for a, t in self.links) + "</nav>"

    def md(self) -> str:
        return ""


@dataclass
class KeyValues:
    items: list[tuple[str, object]]

    def _items(self):
        return [(k, v) for k, v in self.items if v not in (None, "", [], {})]

    def html(self) -> str:
        rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in self._items())
        return f'<table class="kv">{rows}</table>'

    def md(self) -> str:
        return "".join(f"- **{m(k)}**: {m(v)}\n" for k, v in self._items())


class Cell(NamedTuple):
    text: object
    sub: str = ""  # smaller second line (CI, n)
    num: bool = False
    bold: bool = False
    best: bool = False
    kind: str = ""  # missing | bad


def n_cell(x, unit: str = "") -> Cell:
    return Cell(num_text(x, unit), num=True)


def acc_cell(row: dict | None, best: bool = False, missing: str = "—") -> Cell:
    if row is None:
        return Cell(missing, num=True, kind="missing")
    n = f" · n={num_text(row['n'])}" if row.get("n") is not None else ""
    return Cell(pct(row["accuracy"]), (ci(row.get("ci95")) + n).strip(" ·"), num=True, bold=True, best=best)


@dataclass
class Table:
    header: list[str]
    rows: list[list]  # cells: Cell or plain values

    def _cells(self):
        return [[c if isinstance(c, Cell) else Cell(c) for c in row] for row in self.rows]

    def html(self) -> str:
        rows = self._cells()
        numeric = [bool(rows) and all(r[i].num or r[i].kind == "missing" for r in rows) for i in range(len(self.header))]
        head = "".join(f'<th class="num">{e(h)}</th>' if n else f"<th>{e(h)}</th>" for h, n in zip(self.header, numeric))
        body = []
        for row in rows:
            cells = []
            for c in row:
                cls = " ".join(x for x in ("num" if c.num else "", "best" if c.best else "", c.kind) if x)
                text = f"<b>{e(c.text)}</b>" if c.bold else e(c.text)
                sub = f'<span class="ci">{e(c.sub)}</span>' if c.sub else ""
                cells.append(f'<td class="{cls}">{text}{sub}</td>' if cls else f"<td>{text}{sub}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'

    def md(self) -> str:
        def cell(c: Cell) -> str:
            text = f"**{m(c.text)}**" if c.bold else m(c.text)
            return f"{text} {m(c.sub)}" if c.sub else text

        lines = ["| " + " | ".join(m(h) for h in self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self._cells()]
        return "\n".join(lines) + "\n"


@dataclass
class Figure:
    src: str
    caption: str

    def html(self) -> str:
        return f'<figure><img src="{e(self.src)}" alt="{e(self.caption)}"><figcaption>{e(self.caption)}</figcaption></figure>'

    def md(self) -> str:
        caption = m(self.caption).replace("[", "\\[").replace("]", "\\]")
        return f"![{caption}]({self.src})\n"


@dataclass
class Details:
    summary: str
    text: str
    lang: str = "text"

    def html(self) -> str:
        return f"<details><summary>{e(self.summary)}</summary><pre>{e(self.text)}</pre></details>"

    def md(self) -> str:
        return f"<details><summary>{e(self.summary)}</summary>\n\n{_fence(self.text, self.lang)}\n\n</details>\n"


@dataclass
class Examples:
    title: str
    examples: list[dict]
    text_key: str

    def _parts(self):
        for ex in self.examples:
            text = str(ex.get(self.text_key) or "")
            text = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"
            head = (f"id {ex.get('problem_id', ex.get('id'))} · prediction {ex.get('prediction')} · "
                    f"gold {ex.get('gold')}")
            yield bool(ex.get("correct")), head, str(ex.get("question") or ""), text

    def html(self) -> str:
        parts = []
        for ok, head, question, text in self._parts():
            verdict = '<span class="ok">correct</span>' if ok else '<span class="bad">wrong</span>'
            parts.append(f'<div class="example"><p>{verdict} · {e(head)}</p><p>{e(question)}</p><pre>{e(text)}</pre></div>')
        return f"<details><summary>{e(self.title)}</summary>{''.join(parts)}</details>" if parts else ""

    def md(self) -> str:
        parts = [f"**{'correct' if ok else 'wrong'}** · {m(head)}\n\n{m(question)}\n\n{_fence(text)}\n"
                 for ok, head, question, text in self._parts()]
        return f"<details><summary>{e(self.title)}</summary>\n\n" + "\n".join(parts) + "\n</details>\n" if parts else ""


def pct(x) -> str:
    return "—" if x is None else f"{100 * float(x):.1f}%"


def ci(c) -> str:
    return f"[{100 * float(c[0]):.1f}, {100 * float(c[1]):.1f}]" if c and len(c) == 2 else ""


def num_text(x, unit: str = "") -> str:
    if x is None or x == "":
        return "—"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    s = f"{x:,}" if isinstance(x, int) else f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.1f}"
    return f"{s}{unit}"
