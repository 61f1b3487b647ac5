"""Server-rendered SVG charts (no script, no library in the browser): demand against supply per
skill cluster and district. Each chart has a title and description for screen readers; the page
shows the same figures as a table."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Gap:
    label: str
    district: str
    demand: int
    supply: int
    without_match: int | None = None  # demands for which matching found no good offer

    @property
    def unmet(self) -> int:
        return self.without_match if self.without_match is not None else max(self.demand - self.supply, 0)


def _first(item: dict, *keys: str, default=None):
    for key in keys:
        if item.get(key) is not None:
            return item[key]
    return default


def gaps_from(body: dict | list) -> list[Gap]:
    """The matching service's gap rows, read tolerantly (names may still change)."""
    items = body.get("items", []) if isinstance(body, dict) else body
    gaps = []
    for item in items:
        label = _first(item, "skill_cluster", "cluster", "skill", "label", default="ohne Zuordnung")
        if isinstance(label, dict):
            label = _first(label, "label", "name", default="ohne Zuordnung")
        without = _first(item, "demands_without_good_match", "unmet")
        gaps.append(Gap(str(label), str(_first(item, "district", "region", "place", default="—")),
                        int(_first(item, "demands", "demand", "demand_count", default=0)),
                        int(_first(item, "offers_available", "supply", "offers", "offer_count", default=0)),
                        int(without) if without is not None else None))
    return sorted(gaps, key=lambda g: (-g.unmet, -g.demand, g.label))


def bar_chart(gaps: list[Gap], title: str, limit: int = 12) -> str:
    rows = gaps[:limit]
    top = max([max(g.demand, g.supply) for g in rows] + [1])
    label_w, bar_w, row_h = 260, 360, 44
    height = 40 + row_h * len(rows) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {label_w + bar_w + 80} {height}" '
             f'role="img" aria-labelledby="chart-title chart-desc">',
             f'<title id="chart-title">{escape(title)}</title>',
             '<desc id="chart-desc">Balken je Themenfeld und Kreis: Bedarf (dunkel) gegen passendes Angebot '
             '(hell). Die Tabelle unter dem Diagramm enthält dieselben Zahlen.</desc>',
             '<g font-family="Fira Sans, sans-serif" font-size="14" fill="#171a2b">',
             '<rect x="0" y="4" width="14" height="14" fill="#1c3a7a"/><text x="20" y="16">Bedarfe</text>',
             '<rect x="100" y="4" width="14" height="14" fill="#7fa6e0"/><text x="120" y="16">Angebote</text>']
    for i, gap in enumerate(rows):
        y = 40 + i * row_h
        name = gap.label if len(gap.label) <= 30 else gap.label[:29] + "…"
        parts.append(f'<text x="0" y="{y + 14}">{escape(name)}</text>')
        parts.append(f'<text x="0" y="{y + 32}" font-size="12" fill="#3d4155">{escape(gap.district)}</text>')
        for j, (value, colour) in enumerate(((gap.demand, "#1c3a7a"), (gap.supply, "#7fa6e0"))):
            width = round(bar_w * value / top)
            yy = y + 4 + j * 18
            parts.append(f'<rect x="{label_w}" y="{yy}" width="{max(width, 1)}" height="16" fill="{colour}"/>')
            parts.append(f'<text x="{label_w + width + 6}" y="{yy + 13}">{value}</text>')
    parts.append("</g></svg>")
    return "".join(parts)


def gaps_csv(gaps: list[Gap]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(["Themenfeld", "Region", "Bedarfe", "Angebote", "Ohne passendes Angebot"])
    for g in gaps:
        writer.writerow([_cell(g.label), _cell(g.district), g.demand, g.supply, g.unmet])
    return out.getvalue()


def _cell(text: str) -> str:
    """No formula injection when the file is opened in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
