"""Draw docs/images/architecture.png from the code: the layers of tests/test_architecture.py, every package module in
its layer, and the number of import edges between layers (read with `ast`, as the test reads them).

    python docs/draw_architecture.py          # rewrites docs/images/architecture.png
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_architecture as graph  # noqa: E402  (the layer table and the import walker live with the test)


def short(name: str) -> str:
    """`unimask.training.data.loader` -> `data.loader` within its layer box."""
    for prefix in ("unimask.training.", "unimask.tokenizers.", "unimask.demos.", "unimask."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def main(out: Path = ROOT / "docs" / "images" / "architecture.png") -> Path:
    modules = graph.read_modules(ROOT, graph.package_dirs(ROOT / "pyproject.toml"))
    edges = graph.import_edges(modules)
    layers = [name for name, _ in graph.LAYERS]
    members: dict[str, list[str]] = defaultdict(list)
    for name in sorted(modules):
        members[graph.layer_of(name)[1]].append(short(name))
    between = Counter((graph.layer_of(e.importer)[1], graph.layer_of(e.imported)[1]) for e in edges)

    columns, line = 6, 0.26
    heights = {layer: 0.75 + line * -(-len(members[layer]) // columns) for layer in layers}
    total = sum(heights.values()) + 0.3 * len(layers)
    figure = Figure(figsize=(14, 1.2 + 0.9 * total), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_xlim(0, 14)
    axes.set_ylim(0, total)
    axes.set_axis_off()
    y = 0.0
    for row, layer in enumerate(layers):
        names = members[layer]
        height = heights[layer]
        axes.add_patch(FancyBboxPatch((0.1, y), 9.6, height, boxstyle="round,pad=0.02", facecolor=f"C{row}",
                                      alpha=0.15, edgecolor=f"C{row}"))
        axes.text(0.25, y + height - 0.12, f"{row}  {layer}  ({len(names)} modules)", fontsize=11,
                  fontweight="bold", va="top")
        for i, name in enumerate(names):
            axes.text(0.25 + (i % columns) * 1.58, y + height - 0.5 - (i // columns) * line, name, fontsize=8,
                      va="top")
        imports = sorted(((imported, n) for (importer, imported), n in between.items() if importer == layer),
                         key=lambda item: -layers.index(item[0]))
        listed = ", ".join(f"{imported} ({n})" for imported, n in imports) or "nothing"
        axes.text(9.9, y + height / 2, f"imports from: {listed}", fontsize=8, va="center", wrap=True)
        y += height + 0.3
    axes.set_title("unimask's layers, lowest first at the bottom: a module imports only modules of its own layer or "
                   "lower ones.\nNumbers: import statements between layers, read with ast (tests/test_architecture.py "
                   "enforces the rule and that there is no cycle).", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    return out


if __name__ == "__main__":
    print(main())
