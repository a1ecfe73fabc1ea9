"""The model pages' plots as geometry (numbers only): training curves, robust accuracy
vs ε, certified accuracy vs radius; templates/_macros.html draws them as inline SVG."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from bench.db.outcomes import unpack_details
from bench.db.schema import ResultRecord
from bench.leaderboard.stats import accuracy_pct, preference

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + step * 1e-6:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _tick_label(v: float) -> str:
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.1e}"
    return f"{v:.4f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))


def line_plot(title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *,
              xlabel: str, ylabel: str, width: int = 460, height: int = 260) -> dict | None:
    """Geometry of a line plot (numbers only); templates/_macros.html (`plot`) draws it as SVG."""
    clean = []
    for name, pts in series:
        p = [(float(x), float(y)) for x, y in pts
             if isinstance(x, (int, float)) and isinstance(y, (int, float))
             and not isinstance(y, bool) and math.isfinite(x) and math.isfinite(y)]
        if p:
            clean.append((str(name), sorted(p)))
    if not clean:
        return None
    xs = [x for _, p in clean for x, _ in p]
    ys = [y for _, p in clean for _, y in p]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    # one or two points are drawn as points: a line through them would suggest a curve
    points_only = max(len(p) for _, p in clean) <= 2
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    elif points_only:                      # keep the points off the frame
        x0, x1 = x0 - 0.15 * (x1 - x0), x1 + 0.15 * (x1 - x0)
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 0.5), y1 + (abs(y1) * 0.1 or 0.5)
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 58, width - 12, 26, height - 42

    def px(x):
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y):
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    out_series = []
    for i, (name, p) in enumerate(clean):
        pts = [(round(px(x), 2), round(py(y), 2)) for x, y in p]
        out_series.append({
            "name": name, "color": PALETTE[i % len(PALETTE)],
            "points": "" if points_only else " ".join(f"{a},{b}" for a, b in pts),
            "markers": [(a, b, f"{_tick_label(x)}: {y:.4g}") for (a, b), (x, y) in zip(pts, p)]
            if len(pts) <= 40 else [],
            "r": 4.5 if points_only else 2.6,
        })
    xticks = [t for t in nice_ticks(x0, x1) if x0 <= t <= x1]
    if all(float(x).is_integer() for x in xs):      # epochs: no fractional ticks
        xticks = [t for t in xticks if float(t).is_integer()]
        if len(xticks) < 2:
            xticks = sorted(set(xs))[:12]
    return {
        "title": title, "width": width, "height": height, "xlabel": xlabel, "ylabel": ylabel,
        "left": left, "right": right, "top": top, "bottom": bottom,
        "xticks": [(round(px(t), 2), _tick_label(t)) for t in xticks],
        "yticks": [(round(py(t), 2), _tick_label(t)) for t in nice_ticks(y0, y1) if y0 <= t <= y1],
        "series": out_series,
    }


def _numeric_list(v: Any) -> bool:
    return isinstance(v, list) and any(isinstance(x, (int, float)) and not isinstance(x, bool)
                                       for x in v)


def training_plots(curves: dict[str, Any] | None) -> list[dict]:
    """Plots of a model's per-epoch curves: accuracies together, losses, learning rate, rest."""
    curves = {k: v for k, v in (curves or {}).items() if _numeric_list(v)}
    epochs = curves.pop("epoch", None)
    if epochs is None:
        epochs = curves.pop("epochs", None)

    def pts(key):
        values = curves[key]
        own = curves.get(f"{key}_epoch")            # a curve recorded on some epochs only
        if own is not None and len(own) == len(values):
            xs = own
        elif epochs is not None and len(epochs) == len(values):
            xs = epochs
        else:
            xs = range(1, len(values) + 1)
        return [(x, y) for x, y in zip(xs, values) if y is not None]


    groups: dict[str, list[str]] = {"accuracy": [], "loss": [], "learning rate": []}
    other = []
    for k in sorted(curves):
        kl = k.lower()
        if kl.endswith("_epoch") and k[:-len("_epoch")] in curves:
            continue
        if "acc" in kl:
            groups["accuracy"].append(k)
        elif "loss" in kl:
            groups["loss"].append(k)
        elif kl == "lr" or "learning_rate" in kl or kl.endswith("_lr"):
            groups["learning rate"].append(k)
        else:
            other.append(k)
    plots = []
    for title, keys in list(groups.items()) + [(k, [k]) for k in other]:
        if keys:
            p = line_plot(title, [(k, pts(k)) for k in keys], xlabel="epoch",
                          ylabel=title)
            if p:
                plots.append(p)
    return plots


def robustness_plots(results: Sequence[ResultRecord]) -> list[dict]:
    """Accuracy vs ε, one line per attack, one plot per norm (preferred result per ε)."""
    by_norm: dict[str, dict[str, dict[str, ResultRecord]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if r.status != "done" or accuracy_pct(r) is None:
            continue
        cur = by_norm[r.norm or "?"][r.attack].get(r.eps_literal)
        if cur is None or preference(r) > preference(cur):
            by_norm[r.norm or "?"][r.attack][r.eps_literal] = r
    plots = []
    for norm in sorted(by_norm):
        # a curve needs two ε: an attack at one ε (the clean one always) is not plotted
        series = [(attack, [(r.eps, accuracy_pct(r)) for r in per_eps.values()])
                  for attack, per_eps in sorted(by_norm[norm].items()) if len(per_eps) >= 2]
        p = line_plot(f"robust accuracy vs ε ({norm})", series, xlabel=f"ε ({norm})",
                      ylabel="accuracy (%)")
        if p:
            plots.append(p)
    return plots


def certified_plots(results: Sequence[ResultRecord]) -> list[dict]:
    """Certified accuracy vs radius from per-sample radii stored in `details` (if any)."""
    series = []
    for r in results:
        if r.status != "done" or not r.details:
            continue
        try:
            details = unpack_details(r.details)
        except Exception:   # a corrupt blob must not break the whole site
            continue
        radius = next((details[k] for k in ("radius", "certified_radius") if k in details), None)
        if radius is None or radius.ndim != 1 or radius.size == 0:
            continue
        rad = np.where(np.isfinite(radius), radius, -1.0).astype(float)
        top = float(rad.max()) if rad.max() > 0 else 1.0
        grid = np.linspace(0.0, top, 25)
        series.append((f"{r.attack} (n={r.n})",
                       [(float(g), 100.0 * float((rad >= g).mean())) for g in grid]))
    if not series:
        return []
    p = line_plot("certified accuracy vs radius", series, xlabel="radius",
                  ylabel="certified accuracy (%)")
    return [p] if p else []
