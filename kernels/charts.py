"""Bar charts drawn as SVG by a template (``dashboard/_bar_chart.html``): no JavaScript, no CDN.

This module only computes geometry; the template writes the markup, so every label goes through
Django's autoescaping.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int | float
    highlight: bool = False

    @property
    def label_x(self) -> float:
        return self.x + self.width / 2


@dataclass
class BarChart:
    title: str
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[float, int]] = field(default_factory=list)  # (y, value)
    show_every: int = 1  # label every n-th bar (long series)

    @property
    def empty(self) -> bool:
        return not any(b.value for b in self.bars)


def _nice_step(value: float, parts: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... with ``parts`` steps reaching ``value``."""
    step = 1
    while step * parts < value:
        for factor in (2, 2.5, 2):
            step = int(step * factor)
            if step * parts >= value:
                break
    return step


def bar_chart(
    *,
    title: str,
    labels: list[str],
    values: list[int | float],
    highlight: set[int] | None = None,
    width: int = 640,
    height: int = 220,
    max_labels: int = 16,
) -> BarChart:
    """Geometry of a vertical bar chart; ``highlight`` holds indices of bars to colour as alerts."""
    if len(labels) != len(values):
        raise ValueError("labels and values differ in length")
    left, right, top, bottom = 40, 10, 12, height - 28
    chart = BarChart(
        title=title,
        width=width,
        height=height,
        plot_top=top,
        plot_bottom=bottom,
        plot_left=left,
        show_every=max(1, -(-len(labels) // max_labels)),
    )
    if not labels:
        return chart
    step = _nice_step(max(values) if values else 0, 4)
    top_value = 4 * step
    span = bottom - top
    for i in range(5):
        chart.ticks.append((round(bottom - span * i / 4, 1), i * step))
    slot = (width - left - right) / len(labels)
    bar_width = max(2.0, slot * 0.7)
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = span * value / top_value
        chart.bars.append(
            Bar(
                x=round(left + index * slot + (slot - bar_width) / 2, 1),
                y=round(bottom - h, 1),
                width=round(bar_width, 1),
                height=round(h, 1),
                label=label,
                value=value,
                highlight=index in (highlight or set()),
            )
        )
    return chart
