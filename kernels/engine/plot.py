"""Charts for a profile: a roofline with each kernel as a point, plus a bar chart of timings.

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
    "numba_serial": "numba serial",
    "numba_prange": "numba prange",
    "numba_cuda": "numba.cuda",
}
VARIANT_COLOURS = {
    "gfortran": "#4c72b0",
    "numba_serial": "#dd8452",
    "numba_prange": "#55a868",
    "numba_cuda": "#c44e52",
    "estimate": "#8c8c8c",
}
VARIANT_MARKERS = {"gfortran": "o", "numba_serial": "s", "numba_prange": "^", "numba_cuda": "D"}


def render_plot_png(result: ProfileResult | dict[str, Any], *, dpi: int = 110) -> bytes:
    """PNG bytes of the roofline + timing chart for a profile (a ProfileResult or its dict)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = result.to_dict() if isinstance(result, ProfileResult) else result
    fig = Figure(figsize=(12, 5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax_roof, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    _draw_roofline(ax_roof, data)
    _draw_timings(ax_bar, data)
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


def _roofs(data: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(label, peak GFLOP/s, bandwidth GB/s, style) for each roof worth drawing."""
    machine = data.get("machine", {})
    stream = data.get("stream", {}) or {}
    roofs = []
    serial_bw = stream.get("triad_serial_gbs") or machine.get("bandwidth_gbs", 20.0)
    parallel_bw = stream.get("triad_parallel_gbs")
    roofs.append(
        (
            "1 core: "
            + ("STREAM triad" if stream.get("triad_serial_gbs") else "nominal bw")
            + ", nominal peak",
            float(machine.get("peak_gflops_serial", 20.0)),
            float(serial_bw),
            "-",
        )
    )
    if parallel_bw or (machine.get("cores", 1) or 1) > 1:
        roofs.append(
            (
                f"{machine.get('cores', 1)} cores: "
                + ("STREAM triad" if parallel_bw else "nominal bw")
                + ", nominal peak",
                float(machine.get("peak_gflops", 20.0)),
                float(parallel_bw or machine.get("bandwidth_gbs", 20.0)),
                "--",
            )
        )
    return roofs


def _draw_roofline(ax: Any, data: dict[str, Any]) -> None:
    kernels = data.get("kernels", [])
    intensities = [k["intensity"] for k in kernels if k.get("intensity")]
    lo = min([0.01, *[i / 4 for i in intensities]])
    hi = max([100.0, *[i * 4 for i in intensities]])
    xs = [lo * (hi / lo) ** (t / 200) for t in range(201)]
    for label, peak, bw, style in _roofs(data):
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
                    lo = (t["median_s"] - (t.get("min_s") or t["median_s"])) * 1e3
                    hi = ((t.get("max_s") or t["median_s"]) - t["median_s"]) * 1e3
                    errs.append((lo, hi))
            ax.bar(
                xs,
                heights,
                width=width,
                color=VARIANT_COLOURS[v],
                label=VARIANT_LABELS[v],
                yerr=[[e[0] for e in errs], [e[1] for e in errs]] if errs else None,
                capsize=2,
            )
        ax.set_ylabel("median time per call (ms), whiskers min..max")
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
