"""Charts for a profile: a roofline with each kernel as a point, a bar chart of timings and,
when parallel variants were timed at several thread counts, their scaling.

The roofline's ceilings are the probed ones (STREAM triad, FMA peak; labelled "measured") after
``--measure`` and the nominal machine model otherwise (labelled "nominal").

Drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas rather than through pyplot,
because pyplot keeps global state that is not safe in a server handling several requests at once
(the MCP tool renders charts from worker threads).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from kernels.engine.profile import ProfileResult

VARIANT_LABELS = {
    "gfortran": "gfortran -O3",
    "gfortran_omp": "gfortran -O3 -fopenmp",
    "numba_serial": "numba serial",
    "numba_prange": "numba prange",
    "numba_cuda": "numba.cuda",
}
VARIANT_COLOURS = {
    "gfortran": "#4c72b0",
    "gfortran_omp": "#8172b3",
    "numba_serial": "#dd8452",
    "numba_prange": "#55a868",
    "numba_cuda": "#c44e52",
    "estimate": "#8c8c8c",
}
VARIANT_MARKERS = {
    "gfortran": "o",
    "gfortran_omp": "v",
    "numba_serial": "s",
    "numba_prange": "^",
    "numba_cuda": "D",
}


def render_plot_png(result: ProfileResult | dict[str, Any], *, dpi: int = 110) -> bytes:
    """PNG bytes of the roofline + timing chart for a profile (a ProfileResult or its dict)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = result.to_dict() if isinstance(result, ProfileResult) else result
    scaling = _scaling_series(data)
    fig = Figure(figsize=(17 if scaling else 12, 5), dpi=dpi)
    FigureCanvasAgg(fig)
    ratios = [1.1, 1, 0.8] if scaling else [1.1, 1]
    axes = fig.subplots(1, len(ratios), gridspec_kw={"width_ratios": ratios})
    _draw_roofline(axes[0], data)
    _draw_timings(axes[1], data)
    if scaling:
        _draw_scaling(axes[2], scaling)
    fig.suptitle(f"fortranspire profile: {data.get('file', '')}", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_plot(result: ProfileResult | dict[str, Any], path: str | Path) -> Path:
    """Write the chart as a PNG file and return its path."""
    out = Path(path)
    out.write_bytes(render_plot_png(result))
    return out


def roofs(data: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(label, peak GFLOP/s, bandwidth GB/s, style) of each ceiling, probed where measured."""
    machine = data.get("machine", {})
    stream = data.get("stream", {}) or {}
    out = []
    for label, threads, bw_key, peak_key, style in (
        ("1 thread", 1, "triad_serial_gbs", "fma_serial_gflops", "-"),
        (
            f"{stream.get('threads') or machine.get('cores', 1)} threads",
            stream.get("threads") or machine.get("cores", 1) or 1,
            "triad_parallel_gbs",
            "fma_parallel_gflops",
            "--",
        ),
    ):
        if threads == 1 and style == "--":
            continue  # a one-core machine has a single roof
        bw, peak = stream.get(bw_key), stream.get(peak_key)
        nominal_peak = machine.get("peak_gflops_serial" if style == "-" else "peak_gflops", 20.0)
        text = f"{label}: " + (
            f"measured STREAM triad {bw:.1f} GB/s" if bw else "nominal bandwidth"
        )
        text += f", measured FMA peak {peak:.1f} GFLOP/s" if peak else ", nominal peak"
        out.append(
            (
                text,
                float(peak or nominal_peak),
                float(bw or machine.get("bandwidth_gbs", 20.0)),
                style,
            )
        )
    return out


def _draw_roofline(ax: Any, data: dict[str, Any]) -> None:
    kernels = data.get("kernels", [])
    intensities = [k["intensity"] for k in kernels if k.get("intensity")]
    lo = min([0.01, *[i / 4 for i in intensities]])
    hi = max([100.0, *[i * 4 for i in intensities]])
    xs = [lo * (hi / lo) ** (t / 200) for t in range(201)]
    for label, peak, bw, style in roofs(data):
        ax.plot(xs, [min(peak, bw * x) for x in xs], style, color="black", lw=1.2, label=label)
    for k in kernels:
        ai = k.get("intensity")
        if not ai:
            continue
        measured = k.get("measured") or {}
        plotted = False
        for variant, timing in measured.items():
            gflops = timing.get("gflops")
            if timing.get("status") == "ok" and gflops:
                ax.scatter(
                    [ai],
                    [gflops],
                    marker=VARIANT_MARKERS.get(variant, "o"),
                    color=VARIANT_COLOURS.get(variant, "black"),
                    s=40,
                    zorder=3,
                )
                plotted = True
        if not plotted and k.get("flops") and k.get("estimated_s"):
            # Without measurement the point sits on the roof: the model's attainable rate.
            ax.scatter(
                [ai],
                [k["flops"] / k["estimated_s"] / 1e9],
                marker="o",
                facecolors="none",
                edgecolors=VARIANT_COLOURS["estimate"],
                s=50,
                zorder=3,
            )
        ax.annotate(
            k["name"], (ai, _label_y(k)), textcoords="offset points", xytext=(5, 5), fontsize=8
        )
    for variant, label in VARIANT_LABELS.items():
        if any((k.get("measured") or {}).get(variant, {}).get("status") == "ok" for k in kernels):
            ax.scatter(
                [], [], marker=VARIANT_MARKERS[variant], color=VARIANT_COLOURS[variant], label=label
            )
    if not data.get("measured"):
        ax.scatter(
            [],
            [],
            marker="o",
            facecolors="none",
            edgecolors=VARIANT_COLOURS["estimate"],
            label="model estimate",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flop/byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("Roofline")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _label_y(k: dict[str, Any]) -> float:
    measured = k.get("measured") or {}
    rates = [t["gflops"] for t in measured.values() if t.get("status") == "ok" and t.get("gflops")]
    if rates:
        return max(rates)
    if k.get("flops") and k.get("estimated_s"):
        return k["flops"] / k["estimated_s"] / 1e9
    return 1.0


def _draw_timings(ax: Any, data: dict[str, Any]) -> None:
    kernels = data.get("kernels", [])
    names = [k["name"] for k in kernels]
    variants = [
        v
        for v in VARIANT_LABELS
        if any((k.get("measured") or {}).get(v, {}).get("status") == "ok" for k in kernels)
    ]
    if variants:
        width = 0.8 / len(variants)
        for idx, v in enumerate(variants):
            xs, heights, errs = [], [], []
            for pos, k in enumerate(kernels):
                t = (k.get("measured") or {}).get(v, {})
                if t.get("status") == "ok" and t.get("median_s"):
                    xs.append(pos + (idx - (len(variants) - 1) / 2) * width)
                    heights.append(t["median_s"] * 1e3)
                    # Whiskers: the median's confidence interval (noise is a warning, not a bar).
                    lo = (t["median_s"] - (t.get("ci_low_s") or t["median_s"])) * 1e3
                    hi = ((t.get("ci_high_s") or t["median_s"]) - t["median_s"]) * 1e3
                    errs.append((max(lo, 0.0), max(hi, 0.0)))
            ax.bar(
                xs,
                heights,
                width=width,
                color=VARIANT_COLOURS[v],
                label=VARIANT_LABELS[v],
                yerr=[[e[0] for e in errs], [e[1] for e in errs]] if errs else None,
                capsize=2,
            )
        ax.set_ylabel("median time per call (ms), whiskers: 95% interval")
        ax.set_title("Measured timings")
        ax.legend(fontsize=7)
    else:
        est = [(k.get("estimated_s") or 0.0) * 1e3 for k in kernels]
        ax.bar(range(len(kernels)), est, color=VARIANT_COLOURS["estimate"], label="model estimate")
        ax.set_ylabel("estimated time (ms, roofline model)")
        ax.set_title("Estimated cost (run with --measure for timings)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    heights = [b.get_height() for b in ax.patches if b.get_height() > 0]
    if heights and max(heights) / min(heights) > 50:
        ax.set_yscale("log")  # only when the kernels differ by orders of magnitude
    ax.grid(True, axis="y", alpha=0.3)


def _scaling_series(data: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(kernel, variant, rows) for every threaded variant timed at more than one count."""
    out = []
    for k in data.get("kernels", []):
        for variant, t in (k.get("measured") or {}).items():
            rows = [r for r in t.get("scaling") or [] if r.get("speedup")]
            if t.get("status") == "ok" and len(rows) > 1:
                out.append((k["name"], variant, rows))
    return out


def _draw_scaling(ax: Any, series: list[tuple[str, str, list[dict[str, Any]]]]) -> None:
    top = max(r["threads"] for _, _, rows in series for r in rows)
    ax.plot([1, top], [1, top], ":", color="black", lw=1, label="ideal")
    for kernel, variant, rows in series:
        ax.plot(
            [r["threads"] for r in rows],
            [r["speedup"] for r in rows],
            marker=VARIANT_MARKERS.get(variant, "o"),
            color=VARIANT_COLOURS.get(variant, "black"),
            label=f"{kernel}: {VARIANT_LABELS.get(variant, variant)}",
        )
    ax.set_xlabel("threads")
    ax.set_ylabel("speed-up over 1 thread (medians)")
    ax.set_title("Thread scaling")
    ax.set_xticks(sorted({r["threads"] for _, _, rows in series for r in rows}))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
