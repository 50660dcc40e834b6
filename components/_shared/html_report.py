"""Self-contained HTML reports: inline CSS and figures as base64 PNG, no external scripts or fonts.

KFP renders an HTML artifact in a sandboxed iframe; air-gapped clusters cannot fetch CDN assets, so everything
the page needs is embedded.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any

from kfp_tabular.components._shared.markdown import format_value

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1f2328;max-width:1100px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}p{font-size:14px;line-height:1.45}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;color:#fff}
.ok{background:#1a7f37}.fail{background:#cf222e}img{max-width:100%}figure{margin:8px 0}
figcaption{font-size:12px;color:#57606a}
"""


@dataclass
class HtmlReport:
    """Accumulates sections and renders one self-contained HTML page."""

    title: str
    _parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        """Start a section."""
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        """Add escaped prose."""
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def badge(self, text: str, ok: bool) -> None:
        """Add a green (ok) or red badge, e.g. BLESSED / NOT BLESSED."""
        self._parts.append(f'<p><span class="badge {"ok" if ok else "fail"}">{html.escape(text)}</span></p>')

    def table(self, headers: list[str], rows: list[list[Any]], digits: int = 4) -> None:
        """Add a table of already-ordered rows."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(format_value(v, digits))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        self._parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig: Any, caption: str = "") -> None:
        """Embed a matplotlib figure as a PNG data URI and close it."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">{cap}</figure>')

    def render(self) -> str:
        """Return the whole page."""
        body = "\n".join(self._parts)
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )
