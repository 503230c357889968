"""Per-minute charts of the console as SVG geometry: bars and a line over full minutes, with time and
value axes. The unfinished current minute is left out: it would read as a drop."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

WIDTH, HEIGHT = 640, 190
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    at: float  # pixel position on its axis
    label: str


@dataclass(slots=True)
class Chart:
    """What the chart template draws: bars for one series, an optional line for another."""

    bars: list[Bar] = field(default_factory=list)
    line: str = ""  # SVG polyline points
    dots: list[tuple[float, float, str]] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: float = HEIGHT - BOTTOM
    right: float = WIDTH - RIGHT


def nice_max(value: float) -> int:
    """The top of the value axis: four ticks of 1, 2 or 5 x 10^k, the smallest reaching value."""
    step = 1
    while 4 * step < value:
        step = next(s * 10**k for k in range(20) for s in (1, 2, 5) if s * 10**k > step)
    return 4 * step


def clock(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%H:%M")


def minute_chart(series: list[dict[str, int]], bars: str, line: str | None = None) -> Chart:
    """Bars of ``bars`` and a line of ``line`` per full minute of ``series`` (oldest first; its last
    entry, the current minute, is left out)."""
    points = series[:-1]
    chart = Chart()
    if not points:
        return chart
    top = nice_max(
        max(max(p[bars] for p in points), max((p[line] for p in points), default=0) if line else 0)
    )
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / len(points)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    for i, p in enumerate(points):
        at = clock(p["minute"])
        value = p[bars]
        title = f"{at} UTC: {value} {bars}" + (f", {p[line]} {line}" if line else "")
        chart.bars.append(
            Bar(LEFT + i * slot + slot * 0.15, y(value), slot * 0.7, plot_h - (y(value) - TOP), title)
        )
        if i % 5 == (len(points) - 1) % 5:
            chart.x_ticks.append(Tick(LEFT + (i + 0.5) * slot, at))
    if line:
        coords = [(LEFT + (i + 0.5) * slot, y(p[line])) for i, p in enumerate(points)]
        chart.line = " ".join(f"{x:.1f},{v:.1f}" for x, v in coords)
        chart.dots = [
            (x, v, f"{clock(p['minute'])} UTC: {p[line]} {line}")
            for (x, v), p in zip(coords, points, strict=True)
        ]
    chart.y_ticks = [Tick(y(top * k / 4), f"{top * k // 4:,}") for k in range(5)]
    return chart
