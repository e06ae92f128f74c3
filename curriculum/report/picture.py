"""The report's picture, report.png: reward per step with phase bands, transitions, penalty
level, and evaluation per phase.  matplotlib is imported only when drawing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from curriculum.report.load import _DPI, _FALLBACK_COLOURS, _finite, _int_or_none, _num, _PHASE_COLOURS, END_PHASE, EVAL_RATES, PNG_SIZE, RunData, Transition
from curriculum.report.markdown import _end_state

# --------------------------------------------------------------------------------------------
# picture


def _phase_colour(name: str, table: dict[str, str]) -> str:
    if name not in table:
        key = name.lower()
        base = next((v for k, v in _PHASE_COLOURS.items() if key.startswith(k)), None)
        if base is None or base in table.values():
            used = set(table.values())
            base = next((c for c in _FALLBACK_COLOURS if c not in used), _FALLBACK_COLOURS[0])
        table[name] = base
    return table[name]


def _smooth(y, window: int):
    import numpy as np

    if window <= 1:
        return y
    ok = np.isfinite(y)
    vals = np.where(ok, y, 0.0)
    kernel = np.ones(window)
    num = np.convolve(vals, kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~ok] = np.nan  # keep gaps visible
    return out


def write_png(run: RunData, path: str | Path) -> Path:
    """Draw the run (1600x1000 px): reward and penalty over steps, eval rates per phase."""
    # A bare Figure on the Agg canvas: needs no display and leaves pyplot's state (and the
    # backend of a notebook or other caller) untouched.
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    path = Path(path)
    fig = Figure(figsize=(PNG_SIZE[0] / _DPI, PNG_SIZE[1] / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 2], hspace=0.30, left=0.06, right=0.775, top=0.875, bottom=0.085)
    ax = fig.add_subplot(gs[0])
    ax_eval = fig.add_subplot(gs[1])

    colours: dict[str, str] = {}
    for v in run.visits:
        _phase_colour(v.name, colours)

    # ---- title
    info = run.info
    bits = [f"{k} {info[k]}" for k in ("spec", "profile", "seed", "runner") if info.get(k) is not None]
    sub = " · ".join(bits + [_end_state(run)])
    path_txt = " → ".join(v.name for v in run.visits) or "no phases"
    fig.suptitle(f"Curriculum run: {run.title}", fontsize=17, fontweight="bold", y=0.985)
    fig.text(0.5, 0.932, f"{sub}\nphases: {path_txt}", ha="center", va="center", fontsize=11, color="#333333")

    x = np.array(run.step_numbers, dtype=float)
    handles: list[Any] = []

    # ---- top panel: reward over steps
    mean = np.array(run.metric("reward_mean"), dtype=float)
    lo = np.array(run.metric("reward_min"), dtype=float)
    hi = np.array(run.metric("reward_max"), dtype=float)
    have_reward = bool(np.isfinite(mean).any()) if len(mean) else False
    if not len(x):
        _note(ax, "no training steps recorded")
        ax.set_xlim(0, max(1, run.last_step))
    elif have_reward:
        band_ok = np.isfinite(lo) & np.isfinite(hi)
        if band_ok.any():
            handles.append(
                ax.fill_between(x, np.where(band_ok, lo, np.nan), np.where(band_ok, hi, np.nan), where=band_ok,
                                color="#4c72b0", alpha=0.18, linewidth=0, step=None, label="reward range in a step\n(min to max)")
            )
        n_fin = int(np.isfinite(mean).sum())
        window = max(1, min(25, n_fin // 40))
        if window > 1:
            ax.plot(x, mean, color="#4c72b0", alpha=0.35, linewidth=0.8)
            smooth = np.full_like(mean, np.nan)
            index = {st: i for i, st in enumerate(run.step_numbers)}
            for v in run.visits:  # smooth within each phase entry, never across a boundary
                idx = np.array([index[st.step] for st in v.steps], dtype=int)
                if len(idx):
                    smooth[idx] = _smooth(mean[idx], window)
            (h,) = ax.plot(x, smooth, color="#1f3b73", linewidth=2.0, label=f"reward mean, {window}-step\nsmoothing (thin: raw)")
        else:
            (h,) = ax.plot(x, mean, color="#1f3b73", linewidth=1.8, marker="." if n_fin < 60 else None, label="reward mean (per step)")
        handles.append(h)
        gaps = np.array([s.has_reward for s in run.steps]) & ~np.isfinite(mean)
        if gaps.any():
            ymin = np.nanmin(np.where(band_ok, lo, mean)) if np.isfinite(mean).any() else 0.0
            (g,) = ax.plot(x[gaps], np.full(gaps.sum(), ymin), linestyle="none", marker="x", color="#d62728", markersize=7,
                           label="step without a finite\nreward (NaN)")
            handles.append(g)
        ax.set_ylabel("reward", fontsize=12)
    else:
        loss = np.array(run.metric("loss"), dtype=float)
        if np.isfinite(loss).any():
            (h,) = ax.plot(x, loss, color="#555555", linewidth=1.8, label="SFT loss (no reward in this run)")
            handles.append(h)
            ax.set_ylabel("loss", fontsize=12)
        else:
            _note(ax, "no reward or loss values recorded")
    ax.set_xlabel("global training step", fontsize=12)
    ax.grid(True, alpha=0.25)
    if len(x):
        ax.set_xlim(x.min() - 0.5, x.max() + 0.5)

    # phase bands (after the data so the y-limits are known)
    ax.set_ylim(*_padded_ylim(ax, top_frac=0.22))
    ymin, ymax = ax.get_ylim()
    xmin, xmax = ax.get_xlim()
    span = max(xmax - xmin, 1.0)
    seen_phase: set[str] = set()
    phase_handles = []
    for v in run.visits:
        if not v.steps:
            continue
        c = colours[v.name]
        a, b = v.first_step - 0.5, v.last_step + 0.5
        ax.axvspan(a, b, color=c, alpha=0.12, linewidth=0, zorder=0)
        label = v.name
        if v.is_sft and have_reward:
            loss = [s.metrics.get("loss", math.nan) for s in v.steps]
            loss = [val for val in loss if _finite(val)]
            label += "\n(SFT: no reward"
            label += f";\nloss {loss[0]:.3g} → {loss[-1]:.3g})" if len(loss) > 1 else ")"
        width_frac = (b - a) / span
        width_px = width_frac * ax.get_position().width * PNG_SIZE[0]
        if max(len(ln) for ln in label.split("\n")) * 8.5 > width_px:
            label = v.name  # the long label does not fit the band
        if width_frac > 0.035:
            ax.text((a + b) / 2, ymax - (ymax - ymin) * 0.015, label, ha="center", va="top", fontsize=11 if width_frac > 0.07 else 9,
                    fontweight="bold", color=c, zorder=5, clip_on=True)
        if v.name not in seen_phase:
            seen_phase.add(v.name)
            phase_handles.append(Patch(facecolor=c, alpha=0.3, label=f"phase: {v.name}"))

    # transitions
    for i, t in enumerate(run.transitions):
        xs = _transition_x(run, t)
        if xs is None:
            continue
        c = "#b30000" if t.reason != "max_steps" else "#444444"
        ax.axvline(xs, color=c, linestyle="--", linewidth=1.4, zorder=4)
        to = "end of run" if t.to_phase == END_PHASE else t.to_phase
        at_edge = xs >= xmax - span * 0.02  # keep the label inside the axes
        ax.text(xs + (-1 if at_edge else 1) * span * 0.004, ymin + (ymax - ymin) * 0.03, f"→ {to}  ({t.reason})", rotation=90,
                ha="right" if at_edge else "left", va="bottom",
                fontsize=10, color=c, zorder=6, bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.75))
    onsets = [t for t in run.transitions if t.onset_step is not None and t.step is not None]
    for t in onsets:  # the estimated collapse: from its onset to the detection
        ax.axvspan(t.onset_step - 0.5, t.step + 0.5, color="#b30000", alpha=0.12, zorder=1, linewidth=0)
        ax.axvline(t.onset_step - 0.5, color="#b30000", linestyle=":", linewidth=1.6, zorder=4)
    rewinds = [t for t in run.transitions if t.rewind and t.step is not None]
    for t in rewinds:  # the steps the rewind took out of the policy
        start = _int_or_none(t.rewind.get("checkpoint_step"))
        if start is not None:
            ax.axvspan(start + 0.5, t.step + 0.5, facecolor="none", edgecolor="#555555", hatch="//", alpha=0.5,
                       zorder=1, linewidth=0)
    if onsets:
        handles.append(Patch(facecolor="#b30000", alpha=0.25, label="collapse: onset (dotted)\nto detection"))
    if rewinds:
        handles.append(Patch(facecolor="none", edgecolor="#555555", hatch="//", label="rewound: steps taken out\nof the policy"))
    if run.transitions:
        handles.append(Line2D([], [], color="#b30000", linestyle="--", label="transition, a guard fired:\n→ next phase (guard)"))
        if any(t.reason == "max_steps" for t in run.transitions):
            handles.append(Line2D([], [], color="#444444", linestyle="--", label="transition: max_steps"))

    # penalty level on a second axis
    pen = np.array([s.penalty_level for s in run.steps], dtype=float)
    if len(pen) and np.isfinite(pen).any():
        ax2 = ax.twinx()
        (hp,) = ax2.plot(x, pen, drawstyle="steps-mid", color="#c44e52", linewidth=2.0, alpha=0.9,
                         label="penalty level (right axis):\nmost negative penalty\n× penalty_scale")
        handles.append(hp)
        pmin = float(np.nanmin(pen))
        pmax = float(np.nanmax(pen))
        lo_p = min(pmin, 0.0)
        hi_p = max(pmax, 0.0)
        pad = (hi_p - lo_p) * 0.15 or 1.0
        ax2.set_ylim(lo_p - pad, hi_p + pad * 1.6)
        ax2.set_ylabel("penalty level (reward points)", fontsize=12, color="#c44e52")
        ax2.tick_params(axis="y", colors="#c44e52")
        for v in run.visits:  # name the preset where each phase's penalty line starts
            first = next((s for s in v.steps if _finite(s.penalty_level)), None)
            if first is None or (v.last_step - first.step + 1) / span < 0.04:
                continue
            name = first.preset or v.preset or "penalties"
            base = first.penalty_level / first.penalty_scale if first.penalty_scale else first.penalty_level
            ax2.text(first.step + span * 0.03, first.penalty_level, f"{name} {base:.3g}",
                     ha="left", va="bottom", fontsize=9, color="#a02c2c", zorder=6)
        ax.set_zorder(ax2.get_zorder() + 1)  # keep reward and labels above the penalty line
        ax.patch.set_visible(False)
    ax.legend(handles=handles + phase_handles, loc="upper left", bbox_to_anchor=(1.075, 1.0), fontsize=10, frameon=True,
              borderaxespad=0.0)
    ax.set_title("Training reward per step, phases, transitions and penalty level", fontsize=13, loc="left")

    # ---- lower panel: eval rates per phase
    _draw_eval(ax_eval, run, colours)

    fig.savefig(path, dpi=_DPI, format="png")
    return path


def _note(ax, text: str) -> None:
    """A grey message in the middle of an empty panel."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=14, color="#666666")


def _padded_ylim(ax, top_frac: float = 0.2) -> tuple[float, float]:
    lo, hi = ax.get_ylim()
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return 0.0, 1.0
    return lo, hi + (hi - lo) * top_frac


def _transition_x(run: RunData, t: Transition) -> float | None:
    # the boundary between the last step of from_phase and the first of to_phase
    if t.step is not None:
        return t.step + 0.5
    return None


def _draw_eval(ax, run: RunData, colours: dict[str, str]) -> None:
    import numpy as np
    from matplotlib.lines import Line2D

    evaluated = [v for v in run.visits if v.eval]
    ax.set_title("End-of-phase evaluation (points: rate; bars: 95% interval), phases in run order", fontsize=13, loc="left")
    if not evaluated:
        _note(ax, "no evaluation results recorded in this run")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    present = [(k, lab, c) for k, lab, c in EVAL_RATES if any(v.eval_interval(k) is not None for v in evaluated)]
    n = max(len(present), 1)
    width = 0.72
    offsets = np.linspace(-width / 2, width / 2, n) if n > 1 else np.array([0.0])
    handles = []
    for j, (key, label, colour) in enumerate(present):
        xs, ys, el, eh, open_x, open_y = [], [], [], [], [], []
        for i, v in enumerate(evaluated):
            iv = v.eval_interval(key)
            if iv is None or not _finite(iv.value):
                continue
            if iv.has_ci:
                xs.append(i + offsets[j])
                ys.append(iv.value)
                el.append(max(iv.value - iv.lo, 0.0))
                eh.append(max(iv.hi - iv.value, 0.0))
            else:
                open_x.append(i + offsets[j])
                open_y.append(iv.value)
        if xs:
            ax.errorbar(xs, ys, yerr=[el, eh], fmt="o", color=colour, markersize=7, capsize=4, elinewidth=1.6, zorder=3)
        if open_x:
            ax.plot(open_x, open_y, "o", color=colour, markersize=7, markerfacecolor="white", zorder=3)
        # thin line joining one metric across phases to show the trend
        ivs = [v.eval_interval(key) for v in evaluated]
        pts = [(i + offsets[j], iv.value) for i, iv in enumerate(ivs) if iv is not None and _finite(iv.value)]
        line_x = [p[0] for p in pts]
        line_y = [p[1] for p in pts]
        if len(line_x) > 1:
            ax.plot(line_x, line_y, "-", color=colour, alpha=0.35, linewidth=1.0, zorder=2)
        handles.append(Line2D([], [], color=colour, marker="o", linestyle="-", label=label + " rate"))
    for i, v in enumerate(evaluated):
        ax.axvspan(i - 0.5, i + 0.5, color=colours.get(v.name, "#cccccc"), alpha=0.10, linewidth=0, zorder=0)
    ticks = []
    for v in evaluated:
        n_items = _num(v.eval.get("n_items"))
        at = v.last_step if v.last_step is not None else v.finished_step
        where = f"step {at}" if at is not None else ""
        extra = " · ".join(p for p in (where, f"n={int(n_items)}" if _finite(n_items) else "") if p)
        ticks.append(f"#{v.ordinal + 1} {v.name}\n{extra}")
    ax.set_xticks(range(len(evaluated)))
    ax.set_xticklabels(ticks, fontsize=10.5)
    for lab, v in zip(ax.get_xticklabels(), evaluated):
        lab.set_color(colours.get(v.name, "black"))
        lab.set_fontweight("bold")
    ax.set_xlim(-0.6, len(evaluated) - 0.4)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("rate on eval items", fontsize=12)
    ax.grid(True, axis="y", alpha=0.3)
    if not any(True for _ in handles):
        _note(ax, "evaluations carry none of: " + ", ".join(k for k, _, _ in EVAL_RATES))
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.075, 1.0), fontsize=10, frameon=True, borderaxespad=0.0)


