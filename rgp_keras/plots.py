"""PNG figures (matplotlib, the `plot` extra): ASPL history, per-layer kept weights, graph adjacency."""

from rgp_keras.errors import InputValueError, MissingDependencyError


def new_figure(**kwargs):
    """A matplotlib `Figure` drawn off screen, without pyplot: the process's matplotlib backend is left alone."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(
            "Plotting needs matplotlib: pip install 'rgp_keras[plot]' (or pip install matplotlib)."
        ) from None
    return Figure(**kwargs)


def plot_aspl_history(histories, path, moore_bound=None, title=None):
    """Save best ASPL against swap attempts, one line per labelled history.

    Args:
        histories: dict label -> `OptimizeResult.history` (fields attempt, aspl).
        path: PNG file to write.
        moore_bound: draw this lower bound as a dashed line.
        title: figure title.
    """
    figure = new_figure(figsize=(6, 4))
    axes = figure.subplots()
    for label, history in histories.items():
        axes.step(history["attempt"].clip(min=1), history["aspl"], where="post", label=label)
    if moore_bound is not None:
        axes.axhline(moore_bound, color="black", linestyle="--", linewidth=1, label="Moore bound")
    axes.set_xscale("log")
    axes.set_xlabel("swap attempts")
    axes.set_ylabel("ASPL (best so far)")
    _save(figure, axes, path, title)


def plot_layer_sparsity(summary, path, title=None):
    """Save the share of weights each prunable layer keeps, from a `pruning_summary`; returns the figure.

    One horizontal bar per layer with a maskable kernel (BatchNorm, depthwise
    and other layers are left out) on a linear 0-100 % axis, the kept share
    written beside it; layers left dense are grey and say why. The figure
    grows with the number of bars.
    """
    from matplotlib.patches import Patch

    rows = [row for row in summary if row["graph"] or row["channels"] is not None]
    if not rows:
        raise InputValueError("The model has no layer with a maskable kernel (Dense/Conv) to plot.")
    figure = new_figure(figsize=(8, 1.4 + 0.3 * len(rows)))
    axes = figure.subplots()
    for position, row in enumerate(reversed(rows)):
        kept = 100 * (1 - row["sparsity"])
        masked = bool(row["graph"])
        axes.barh(position, kept, color="tab:blue" if masked else "lightgray", height=0.7)
        note = f"{kept:.1f}%  (graph {row['graph']})" if masked else _shorten(row["skipped"] or "not pruned", 80)
        axes.text(1, position, note, va="center", fontsize=7, color="white" if masked and kept > 30 else "black")
    axes.set_yticks(range(len(rows)), [row["name"] for row in reversed(rows)], fontsize=7)
    axes.set_xlim(0, 100)
    axes.set_xlabel("weights kept (%)")
    axes.legend(handles=[Patch(color="tab:blue", label="masked"), Patch(color="lightgray", label="left dense")],
                loc="lower right", bbox_to_anchor=(1, 1), ncol=2, fontsize=7, frameon=False)
    _save(figure, axes, path, title, legend=False)
    return figure


def _shorten(text, width):
    return text if len(text) <= width else text[: width - 3] + "..."


def plot_adjacency(graph, path, title=None):
    """Save the adjacency matrix of a `RegularGraph` as a heatmap (which channel groups connect); returns it."""
    from matplotlib.patches import Patch

    figure = new_figure(figsize=(5, 5.4))
    axes = figure.subplots()
    axes.imshow(graph.adjacency, cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
    axes.set_xlabel("output channel group")
    axes.set_ylabel("input channel group")
    axes.legend(handles=[Patch(facecolor="black", label="kept: input group -> output group"),
                         Patch(facecolor="white", edgecolor="gray", label="pruned")],
                loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    _save(figure, axes, path, title or f"n={graph.nodes}, k={graph.degree}, ASPL {graph.aspl:.4f}", legend=False)
    return figure


def _save(figure, axes, path, title, legend=True):
    if title:
        axes.set_title(title)
    if legend:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
