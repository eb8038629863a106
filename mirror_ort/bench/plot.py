"""``--plot OUT.png``: speedup over ``ar`` per SpecBench category, one bar per row."""

from pathlib import Path

from ..errors import MirrorError
from .requirements import installed
from .rows import BASELINE


def check_plot_available() -> None:
    if not installed("matplotlib"):
        raise MirrorError("--plot needs matplotlib: pip install matplotlib (or pip install 'mirror-ort[bench]')")


def plot_speedups(methods: dict, categories: list[str], out, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in methods if n != BASELINE]
    groups = [*categories, "overall"]
    # one colour per method, hatched in the split allocation
    palette = plt.get_cmap("tab10").colors
    base = list(dict.fromkeys(methods[n].get("method", n) for n in names))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(groups) * max(1, len(names)) ** 0.5 + 4), 4.8))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [(methods[name]["per_category"].get(c, {}).get("speedup") if c != "overall"
                   else methods[name]["speedup"]) or 0.0 for c in groups]
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        colour = palette[base.index(methods[name].get("method", name)) % len(palette)]
        hatch = "//" if methods[name].get("alloc") == "split" else None
        ax.bar(xs, values, width, label=name, color=colour, hatch=hatch, edgecolor="white" if hatch else None)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right")
    ax.set_ylabel(f"speedup over {BASELINE} (tokens/s ratio)")
    ax.set_title(title or "mirror-ort bench: speedup per SpecBench category")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=120)
    except (OSError, ValueError) as e:
        raise MirrorError(f"cannot write the plot to {out}: {e}") from None
    finally:
        plt.close(fig)
    return out
