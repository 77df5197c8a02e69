"""PNG figures (matplotlib, the `plot` extra): ASPL history, per-layer kept weights, graph adjacency."""

from rgp_keras.errors import MissingDependencyError


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
    """Save a bar chart of dense vs kept parameters per layer from a `pruning_summary`."""
    rows = [row for row in summary if row["params"]]
    figure = new_figure(figsize=(max(6, 0.5 * len(rows)), 4))
    axes = figure.subplots()
    positions = range(len(rows))
    axes.bar(positions, [row["params"] for row in rows], color="lightgray", label="dense")
    axes.bar(positions, [row["kept_params"] for row in rows], color="tab:blue", label="kept")
    axes.set_xticks(list(positions), [row["name"] for row in rows], rotation=60, ha="right", fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("parameters")
    _save(figure, axes, path, title)


def plot_adjacency(graph, path, title=None):
    """Save the adjacency matrix of a `RegularGraph` as a heatmap (which channel groups connect)."""
    figure = new_figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.imshow(graph.adjacency, cmap="Greys", interpolation="nearest")
    axes.set_xlabel("output channel group")
    axes.set_ylabel("input channel group")
    _save(figure, axes, path, title or f"n={graph.nodes}, k={graph.degree}, ASPL {graph.aspl:.4f}", legend=False)


def _save(figure, axes, path, title, legend=True):
    if title:
        axes.set_title(title)
    if legend:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
