"""PNG figures (matplotlib, the `plot` extra): ASPL history of an optimisation run."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "Plotting needs matplotlib: pip install 'rgp_keras[plot]' (or pip install matplotlib)."
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_aspl_history(histories, path, moore_bound=None, title=None):
    """Save best ASPL against swap attempts, one line per labelled history.

    Args:
        histories: dict label -> `OptimizeResult.history` (fields attempt, aspl).
        path: PNG file to write.
        moore_bound: draw this lower bound as a dashed line.
        title: figure title.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, history in histories.items():
        axes.step(history["attempt"].clip(min=1), history["aspl"], where="post", label=label)
    if moore_bound is not None:
        axes.axhline(moore_bound, color="black", linestyle="--", linewidth=1, label="Moore bound")
    axes.set_xscale("log")
    axes.set_xlabel("swap attempts")
    axes.set_ylabel("ASPL (best so far)")
    if title:
        axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
