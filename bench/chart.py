#!/usr/bin/env python3
"""Draw no-op throughput against concurrency from the peer benchmark's JSON files as an SVG.

    python3 bench/chart.py OUT.svg RESULTS.json [MORE.json ...]

Each JSON file has {"rows": [{"system", "backend", "concurrency", "drain_per_s"}, ...]} (one row
per configuration tried; the chart shows each system's best at each concurrency) and
optionally {"limits": [{"backend", "claim_complete_per_s"}]}, as written by
`party-peers --json` and `party-peers-effectum --json`. Only the Python standard library is used.
"""

import json
import math
import sys

W, H = 760, 460
LEFT, RIGHT, TOP, BOTTOM = 80, 210, 40, 60
COLOURS = ["#1b6ac9", "#d1495b", "#edae49", "#00798c", "#6a4c93", "#30a14e", "#8d6e63", "#555555"]


def load(paths):
    series, limits = {}, {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for r in data.get("rows", []):
            if r.get("drain_per_s", 0) <= 0:
                continue
            key = f'{r["system"]} ({r["backend"]})'
            # Several configurations of one system: keep its best at each concurrency.
            points = series.setdefault(key, {})
            c = r["concurrency"]
            points[c] = max(points.get(c, 0), r["drain_per_s"])
        for l in data.get("limits", []):
            limits[l["backend"]] = l["claim_complete_per_s"]
    return {k: sorted(v.items()) for k, v in series.items()}, limits


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, paths = sys.argv[1], sys.argv[2:]
    series, limits = load(paths)
    xs = sorted({c for pts in series.values() for c, _ in pts})
    values = [v for pts in series.values() for _, v in pts] + list(limits.values())
    lo = 10 ** math.floor(math.log10(max(min(values), 1)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(c):
        i = xs.index(c)
        return LEFT + (pw * i / (len(xs) - 1) if len(xs) > 1 else pw / 2)

    def y(v):
        return TOP + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="15" font-weight="bold">'
        "No-op tasks per second by worker concurrency (log scale)</text>",
    ]
    decade = lo
    while decade <= hi:
        for m in (1, 2, 5):
            v = decade * m
            if lo <= v <= hi:
                svg.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                           f'stroke="#e4e4e4"/>')
                svg.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
        decade *= 10
    for c in xs:
        svg.append(f'<line x1="{x(c):.1f}" x2="{x(c):.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#f0f0f0"/>')
        svg.append(f'<text x="{x(c):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{c}</text>')
    svg.append(f'<text x="{LEFT + pw / 2}" y="{H - 15}" text-anchor="middle">concurrency</text>')
    svg.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    legend_y = TOP + 10
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        dash = ' stroke-dasharray="6 4"' if "postgres" in name else ""
        path = " ".join(f"{'M' if j == 0 else 'L'}{x(c):.1f},{y(v):.1f}" for j, (c, v) in enumerate(pts))
        svg.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2.5"{dash}/>')
        for c, v in pts:
            svg.append(f'<circle cx="{x(c):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}"/>')
        svg.append(f'<line x1="{LEFT + pw + 15}" x2="{LEFT + pw + 40}" y1="{legend_y}" y2="{legend_y}" '
                   f'stroke="{colour}" stroke-width="2.5"{dash}/>')
        svg.append(f'<text x="{LEFT + pw + 46}" y="{legend_y + 4}">{name}</text>')
        legend_y += 20
    for backend, v in sorted(limits.items()):
        svg.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#000" stroke-dasharray="2 3"/>')
        svg.append(f'<text x="{LEFT + 6}" y="{y(v) - 5:.1f}">plain SQL limit ({backend}): '
                   f'{v:,.0f}/s</text>')
    svg.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
