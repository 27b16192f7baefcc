"""The atlas's HTML: index, layer pages, unit pages; plain files with relative links, so a site opens from the file
system (file://) and from any static host. No external resources; the only script is the layer page's sorter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from .stats import UnitStats

CSS = """\
:root { color-scheme: light dark; --fg: #1d1f23; --bg: #f6f6f4; --card: #fff; --muted: #6b7078; --line: #dcdcd8;
  --accent: #c0392b; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e6e3; --bg: #16171a; --card: #202226; --muted: #9aa0a8;
  --line: #33363c; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 1.2rem 1.6rem 3rem; font: 15px/1.45 system-ui, sans-serif; color: var(--fg);
  background: var(--bg); }
a { color: inherit; }
h1 { font-size: 1.5rem; margin: .2rem 0 .4rem; } h2 { font-size: 1.15rem; margin: 1.4rem 0 .5rem; }
.muted { color: var(--muted); } .label { color: var(--accent); font-weight: 600; }
nav { display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; font-size: .9rem; margin-bottom: .6rem; }
nav .sep { flex: 1; }
.layer { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .6rem .8rem;
  margin: .7rem 0; }
.layer h2 { margin: 0 0 .4rem; } .strip { display: flex; gap: 3px; overflow: hidden; }
.strip img { width: 48px; height: 48px; image-rendering: pixelated; object-fit: cover; border-radius: 3px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(118px, 1fr)); gap: 8px; }
.tiles.one { grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)); }
.tile { display: block; background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 4px; text-decoration: none; font-size: .8rem; }
.tile .pics { display: flex; gap: 2px; }
.tile img { width: 54px; height: 54px; object-fit: cover; image-rendering: pixelated; border-radius: 3px; }
.tile .cap { display: block; color: var(--muted); overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.none { display: inline-block; width: 54px; height: 54px; border-radius: 3px; background: var(--line); }
.top { display: flex; flex-wrap: wrap; gap: 10px; }
.entry { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 6px; font-size: .8rem;
  flex: 0 0 auto; min-width: 210px; }
.entry .src { max-width: 400px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.entry .pics { display: flex; flex-wrap: wrap; gap: 4px; align-items: flex-start; }
.entry img { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; background: #000; }
.whole { position: relative; display: inline-block; width: 96px; height: 96px; overflow: hidden; }
.whole img { width: 96px; height: 96px; object-fit: fill; }
.box { position: absolute; border: 2px solid #ff3b30; pointer-events: none; }
figure { margin: 0; text-align: center; } figcaption { color: var(--muted); font-size: .75rem; }
.facts { display: flex; flex-wrap: wrap; gap: 1.4rem; align-items: flex-start; }
.opt img { width: 192px; height: 192px; image-rendering: auto; border-radius: 6px; }
table.stats td { padding: 1px 10px 1px 0; } table.stats td:first-child { color: var(--muted); }
select { font: inherit; }
"""

SORT_SCRIPT = """\
(function () {
  var grid = document.getElementById('tiles'), pick = document.getElementById('sort');
  if (!grid || !pick) return;
  pick.addEventListener('change', function () {
    var key = pick.value, tiles = Array.prototype.slice.call(grid.children);
    tiles.sort(function (a, b) {
      if (key === 'unit') return a.dataset.unit - b.dataset.unit;
      var d = parseFloat(b.dataset[key]) - parseFloat(a.dataset[key]);
      return isNaN(d) ? 0 : d || a.dataset.unit - b.dataset.unit;
    });
    tiles.forEach(function (t) { grid.appendChild(t); });
  });
})();
"""


@dataclass
class Pic:
    """An image on a page: `src` (thumbnail) and `href` (original), relative to the site root."""

    src: str
    href: str
    alt: str
    box: tuple[float, float, float, float] | None = None  # (top, left, bottom, right) as fractions of the image


@dataclass
class EntryView:
    rank: int
    value: float
    y: int
    x: int
    box: tuple[int, int, int, int]
    source: str
    whole: Pic | None
    crops: dict[str, Pic] = field(default_factory=dict)  # kind -> crop


@dataclass
class UnitView:
    unit: int
    label: str  # the long label on the unit page ("raises most: ..."), "" when none applies
    short: str  # the tile caption (a class name)
    best: Pic | None
    optimized: Pic | None
    stats: UnitStats
    stats_from: str  # "images" (a forward of the store's images) or "top-k" (store values only)
    top_value: float
    entries: list[EntryView] = field(default_factory=list)


@dataclass
class LayerView:
    name: str
    title: str
    slug: str
    shape: tuple[int, ...]
    units: list[UnitView]
    spatial: bool = True  # False for (C,) layers: a unit has one value per image, no maps


def rel(depth: int, path: str) -> str:
    """`path` (from the site root) as seen from a page `depth` folders deep."""
    return "../" * depth + path


def page(title: str, body: str, depth: int, script: str = "") -> str:
    tail = f"<script>\n{script}</script>\n" if script else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="deepvis-atlas">'
            f"<title>{escape(title)}</title>"
            f'<link rel="stylesheet" href="{rel(depth, "atlas.css")}"></head>\n<body>\n{body}\n{tail}</body></html>\n')


def img(pic: Pic | None, depth: int, cls: str = "") -> str:
    if pic is None:
        return '<span class="none" title="no image"></span>'
    c = f' class="{cls}"' if cls else ""
    return (f'<img{c} src="{escape(rel(depth, pic.src))}" alt="{escape(pic.alt)}" loading="lazy" '
            f'decoding="async">')


def fmt(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.4g}"


def span(lo: float, hi: float) -> str:
    """"lo to hi" with as many digits as it takes to tell them apart (random nets give near-constant logits)."""
    for digits in range(4, 12):
        a, b = f"{lo:.{digits}g}", f"{hi:.{digits}g}"
        if a != b:
            return f"{a} to {b}"
    return f"{fmt(lo)} to {fmt(hi)}"


def shape_text(shape: Sequence[int]) -> str:
    if len(shape) == 3:
        return f"{shape[0]} @ {shape[1]}x{shape[2]}"
    return " x ".join(str(s) for s in shape)


# ---------------------------------------------------------------- index

def index_page(title: str, facts: str, layers: list[LayerView], strip: int = 24) -> str:
    parts = [f"<h1>{escape(title)}</h1>", f'<p class="muted">{facts}</p>']
    for lv in layers:
        pics = "".join(f'<a href="{escape(lv.slug)}/{u.unit}.html" title="unit {u.unit}">{img(u.best, 0)}</a>'
                       for u in lv.units[:strip])
        parts.append(f'<section class="layer"><h2><a href="{escape(lv.slug)}/index.html">{escape(lv.title)}</a>'
                     f'</h2><div class="muted">{escape(lv.name)} &middot; {escape(shape_text(lv.shape))} &middot; '
                     f'{len(lv.units)} units</div><div class="strip">{pics}</div></section>')
    return page(title, "\n".join(parts), 0)


# ---------------------------------------------------------------- layer page

def layer_nav(layers: list[LayerView], k: int, depth: int) -> str:
    prev = layers[k - 1] if k > 0 else None
    nxt = layers[k + 1] if k + 1 < len(layers) else None
    bits = [f'<a href="{rel(depth, "index.html")}">atlas index</a>']
    bits.append(f'<a href="{rel(depth, prev.slug + "/index.html")}" rel="prev">&larr; {escape(prev.title)}</a>'
                if prev else '<span class="muted">first layer</span>')
    bits.append(f'<a href="{rel(depth, nxt.slug + "/index.html")}" rel="next">{escape(nxt.title)} &rarr;</a>'
                if nxt else '<span class="muted">last layer</span>')
    return "<nav>" + "".join(bits) + "</nav>"


def layer_page(model_title: str, layers: list[LayerView], k: int) -> str:
    lv = layers[k]
    tiles = []
    for u in lv.units:
        s = u.stats
        cap = f"{u.unit}" + (f" &middot; {escape(u.short)}" if u.short else "")
        pics = img(u.best, 1) + (img(u.optimized, 1) if u.optimized is not None else "")
        tip = f"unit {u.unit}" + (f": {escape(u.short)}" if u.short else "")
        tiles.append(f'<a class="tile" href="{u.unit}.html" data-unit="{u.unit}" data-mean="{s.mean:.6g}" '
                     f'data-sel="{s.selectivity:.6g}" data-top="{u.top_value:.6g}" title="{tip}">'
                     f'<span class="pics">{pics}</span><span class="cap">{cap}</span></a>')
    body = (layer_nav(layers, k, 1)
            + f"<h1>{escape(lv.title)}</h1>"
            + f'<p class="muted">{escape(model_title)} &middot; {escape(lv.name)} &middot; '
              f"{escape(shape_text(lv.shape))} &middot; each tile: the best dataset patch"
              f"{' and the optimized image' if any(u.optimized for u in lv.units) else ''}</p>"
            + '<p><label>sort by <select id="sort"><option value="unit">unit</option>'
              '<option value="mean">mean activation</option><option value="sel">selectivity</option>'
              '<option value="top">top activation</option></select></label></p>'
            + f'<div class="tiles{"" if any(u.optimized for u in lv.units) else " one"}" id="tiles">'
              f'{"".join(tiles)}</div>')
    return page(f"{lv.title} - {model_title}", body, 1, SORT_SCRIPT)


# ---------------------------------------------------------------- unit page

def histogram_svg(s: UnitStats, marks: Sequence[float], width: int = 320, height: int = 120) -> str:
    """Bars of `s.hist` over `s.edges`; `marks` (the top-k values) as red ticks under the axis."""
    if not s.hist:
        return '<p class="muted">no activations to plot</p>'
    lo, hi = s.edges[0], s.edges[-1]
    peak = max(s.hist) or 1
    bw = (width - 20) / len(s.hist)
    bars = []
    for i, c in enumerate(s.hist):
        if c == 0:
            continue
        h = (height - 30) * c / peak
        bars.append(f'<rect x="{10 + i * bw:.1f}" y="{height - 20 - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                    f'height="{h:.1f}"><title>{c}: {span(s.edges[i], s.edges[i + 1])}</title></rect>')
    ticks = []
    for v in marks:
        if math.isfinite(v) and hi > lo:
            x = 10 + (width - 20) * min(max((v - lo) / (hi - lo), 0.0), 1.0)
            ticks.append(f"M{x:.1f} {height - 19}v7")
    lo_text, hi_text = span(lo, hi).split(" to ")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="histogram of the spatial maximum"><g fill="#7f8c9a">{"".join(bars)}</g>'
            f'<line x1="10" x2="{width - 10}" y1="{height - 20}" y2="{height - 20}" stroke="currentColor"/>'
            f'<path d="{"".join(ticks)}" stroke="#e74c3c" stroke-width="2"/>'
            f'<text x="10" y="{height - 2}" font-size="10" fill="currentColor">{lo_text}</text>'
            f'<text x="{width - 10}" y="{height - 2}" font-size="10" fill="currentColor" text-anchor="end">'
            f"{hi_text}</text></svg>")


def whole_image(pic: Pic, depth: int) -> str:
    box = ""
    if pic.box is not None:
        t, left, b, r = (min(max(v, 0.0), 1.0) * 100 for v in pic.box)
        box = (f'<span class="box" style="top:{t:.2f}%;left:{left:.2f}%;height:{b - t:.2f}%;'
               f'width:{r - left:.2f}%"></span>')
    return (f'<a class="whole" href="{escape(rel(depth, pic.href))}" title="the whole image (original)">'
            f"{img(pic, depth)}{box}</a>")


def entry_card(e: EntryView, depth: int) -> str:
    figs = []
    if e.whole is not None:
        figs.append(f"<figure>{whole_image(e.whole, depth)}<figcaption>image</figcaption></figure>")
    for kind, pic in e.crops.items():
        name = {"input": "receptive field", "deconv": "deconvnet", "guided": "guided"}.get(kind, kind)
        figs.append(f'<figure><a href="{escape(rel(depth, pic.href))}">{img(pic, depth)}</a>'
                    f"<figcaption>{name}</figcaption></figure>")
    src = escape(e.source) if e.source else "(no name)"
    return (f'<div class="entry" id="r{e.rank}"><div class="pics">{"".join(figs)}</div>'
            f"<div>#{e.rank + 1} &middot; value {fmt(e.value)} &middot; at y={e.y} x={e.x}</div>"
            f'<div class="muted src" title="{src}">{src}</div></div>')


def unit_page(model_title: str, layers: list[LayerView], k: int, u: UnitView) -> str:
    lv = layers[k]
    n = len(lv.units)
    bits = ['<a href="../index.html">atlas index</a>', f'<a href="index.html">{escape(lv.title)}</a>']
    bits.append(f'<a href="{u.unit - 1}.html" rel="prev">&larr; unit {u.unit - 1}</a>' if u.unit > 0
                else '<span class="muted">first unit</span>')
    bits.append(f'<a href="{u.unit + 1}.html" rel="next">unit {u.unit + 1} &rarr;</a>' if u.unit + 1 < n
                else '<span class="muted">last unit</span>')
    bits.append('<span class="sep"></span>')
    for j in (k - 1, k + 1):
        if 0 <= j < len(layers):
            other = layers[j]
            arrow = "&uarr;" if j < k else "&darr;"
            if u.unit < len(other.units):
                text, target = f"unit {u.unit} of {escape(other.title)}", f"{u.unit}.html"
            else:
                text, target = f"{escape(other.title)} (no unit {u.unit})", "index.html"
            bits.append(f'<a href="../{escape(other.slug)}/{target}">{arrow} {text}</a>')
    s = u.stats
    label = f'<p class="label">{escape(u.label)}</p>' if u.label else ""
    rows = [("top activation (best image)", fmt(u.top_value))]
    if u.stats_from == "images" and lv.spatial:
        rows += [(f"mean activation (spatial mean, {s.images} images)", fmt(s.mean)),
                 ("spatial max: mean &plusmn; std", f"{fmt(s.max_mean)} &plusmn; {fmt(s.max_std)}"),
                 ("selectivity (top-k above typical, in std)", fmt(s.selectivity))]
        caption = f"spatial max over {s.images} of the store's images; red: this unit's top-k"
    elif u.stats_from == "images":
        rows += [(f"activation: mean &plusmn; std ({s.images} images)", f"{fmt(s.max_mean)} &plusmn; {fmt(s.max_std)}"),
                 ("selectivity (top-k above typical, in std)", fmt(s.selectivity))]
        caption = f"activation over {s.images} of the store's images; red: this unit's top-k"
    else:
        rows += [(f"mean of the top-{s.images}", fmt(s.max_mean))]
        caption = "the top-k values only (no model to compute more)"
    table = "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows)
    opt = ""
    if u.optimized is not None:
        opt = (f'<figure class="opt"><a href="{escape(rel(1, u.optimized.href))}">{img(u.optimized, 1)}</a>'
               "<figcaption>optimized image</figcaption></figure>")
    entries = "".join(entry_card(e, 1) for e in u.entries) or '<p class="muted">no dataset entries</p>'
    marks = [e.value for e in u.entries]
    body = ("<nav>" + "".join(bits) + "</nav>"
            + f"<h1>{escape(lv.title)} &middot; unit {u.unit}</h1>{label}"
            + f'<p class="muted">{escape(model_title)} &middot; {escape(lv.name)}:{u.unit}</p>'
            + f'<div class="facts">{opt}<div><table class="stats">{table}</table>'
            + f'<figure>{histogram_svg(s, marks)}<figcaption>{caption}</figcaption></figure></div></div>'
            + f"<h2>Top {len(u.entries)} images</h2><div class=\"top\">{entries}</div>")
    return page(f"{lv.title} unit {u.unit} - {model_title}", body, 1)
