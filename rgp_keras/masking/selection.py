"""Which layers carry the mask, how many graph nodes they can take, and what each costs (params, MACs).

Shared by the Keras 3 path (`rgp_keras.prune`), the tf_keras path (`rgp_keras.tfmot.adapter`),
`pruning_summary` and the export.
"""

import math

from rgp_keras.errors import InputValueError
from rgp_keras.graph import exact_nodes, nearest_degree
from rgp_keras.masking.masks import kernel_channels, prunable_kernel
from rgp_keras.model_walk import leaves

# nodes="auto" prefers channel groups this wide (XNNPACK's grouped convolution is fast from 16
# channels per group on), then narrower ones, and never picks more nodes than the paper's 64.
GROUP_WIDTHS = (16, 8, 4, 2, 1)
MAX_AUTO_NODES = 64
# The layers that together hold this share of the selected layers' MACs decide nodes="auto".
MAJOR_SHARE = 0.9


def skip_reason(layer, graph):
    """Why `layer` cannot carry `graph`'s mask (`graph=None`: judge the layer type only), or None when it can."""
    attribute, reason = prunable_kernel(layer)
    if attribute is None:
        return reason
    if graph is None:
        return None
    channels = kernel_channels(getattr(layer, attribute).shape, reason)
    if min(channels) < graph.nodes:
        too_few = [f"{count} {side} channel{'' if count == 1 else 's'}"
                   for side, count in zip(("input", "output"), channels) if count < graph.nodes]
        return f"{' and '.join(too_few)}: fewer than the graph's {graph.nodes} nodes"
    return None


def wanted(model, layers, skip_first, skip_last, reason_of=skip_reason):
    """[(layer, named)] the user's selection asks for, before any graph: `named` when chosen by name.

    Default selection: every layer whose type can carry a mask, minus the first
    and last (`skip_first`, `skip_last`). Raises when a name matches no layer.
    """
    walked = list(leaves(model))
    if layers is None:
        candidates = [layer for layer in walked if reason_of(layer, None) is None]
        skipped = set()
        if candidates and skip_first:
            skipped.add(id(candidates[0]))
        if candidates and skip_last:
            skipped.add(id(candidates[-1]))
        return [(layer, False) for layer in candidates if id(layer) not in skipped]
    selectors = checked_selectors(model, layers)
    return [(layer, layer.name in selectors) for layer in walked if matches(layer, selectors)]


def checked_selectors(model, layers):
    """`layers` (a name, class or predicate, or a list of them) as a list; raises when a name matches no layer."""
    selectors = layers if isinstance(layers, (list, tuple, set)) else [layers]
    names = {layer.name for layer in leaves(model)}
    unknown = [s for s in selectors if isinstance(s, str) and s not in names]
    if unknown:
        raise InputValueError(f"No layer named {unknown} in model {model.name!r}; its layers are {sorted(names)}.")
    return selectors


def select(model, graph, layers, skip_first, skip_last, reason_of=skip_reason):
    """ids of the layers to wrap; raises when a layer named explicitly cannot be masked.

    `reason_of(layer, graph)` says why a layer cannot be masked (None: it can).
    """
    asked = wanted(model, layers, skip_first, skip_last, reason_of)
    chosen = []
    for layer, named in asked:
        reason = reason_of(layer, graph)
        if reason is None:
            chosen.append(layer)
        elif named:
            raise InputValueError(f"Layer {layer.name!r} cannot be pruned by RGP: {reason}.")
    if not chosen:
        if not asked:
            raise InputValueError(
                f"No layer of model {model.name!r} is selected for pruning: "
                + ("none matches `layers`." if layers is not None else
                   "it has no prunable layer besides the first and last, which skip_first/skip_last keep dense. "
                   "Pass skip_first=False / skip_last=False, or select `layers`.")
            )
        widest = max((narrow_side(layer) or 0 for layer, _ in asked), default=0)
        raise InputValueError(
            f"No selected layer of model {model.name!r} can carry a {graph.nodes}-node graph: they have at most "
            f"{widest} channels on their narrower side (each side needs >= {graph.nodes}), or none is prunable. "
            "Use fewer `nodes` (or nodes='auto'), or select other `layers`."
        )
    return {id(layer) for layer in chosen}


def narrow_side(layer):
    """Channels on the narrower side of the layer's maskable kernel (None: no kernel known)."""
    attribute, layout = prunable_kernel(layer)
    if attribute is not None:
        kernel = getattr(layer, attribute, None)
        return None if kernel is None else min(kernel_channels(kernel.shape, layout))
    if hasattr(layer, "get_prunable_weights"):  # a TF-MOT PrunableLayer: weights laid out (..., in, out)
        shapes = [tuple(weight.shape) for weight in layer.get_prunable_weights()]
        return min((min(shape[-2:]) for shape in shapes if len(shape) >= 2), default=None)
    return None


def auto_nodes(layers, sparsity, self_loops=False):
    """(nodes, degree) for nodes="auto": see `prune_regular_graph`.

    The layers holding `MAJOR_SHARE` of the MACs (parameters where MACs are
    unknown) decide: the largest n <= `MAX_AUTO_NODES` whose (k + self_loops) / n
    equals 1 - sparsity exactly and whose groups are at least 16 channels wide
    in each of them; failing that 8, 4, 2, then 1 channel per group. When no n
    up to 64 gives the density exactly: the power of two n with the widest
    groups whose nearest k is within 25 % of the density; failing that the
    (n, k) giving the nearest density.
    """
    costs = [(narrow_side(layer), _cost(layer)) for layer in layers]
    costs = sorted((c for c in costs if c[0]), key=lambda c: -c[1])
    if not costs:
        return MAX_AUTO_NODES, _nearest_degree(MAX_AUTO_NODES, sparsity, self_loops)
    total, held, narrowest = sum(cost for _, cost in costs), 0, None
    for channels, cost in costs:
        narrowest = channels if narrowest is None else min(narrowest, channels)
        held += cost
        if held >= MAJOR_SHARE * total:
            break
    for width in GROUP_WIDTHS:
        nodes = exact_nodes(1 - sparsity, min(MAX_AUTO_NODES, narrowest // width), self_loops)
        if nodes:
            return nodes, round((1 - sparsity) * nodes) - self_loops
    # No n gives the density exactly: a power of two (even groups) within 25 % of the density, widest
    # groups first; failing that, the nearest density on any n.
    density = lambda c: (c[1] + self_loops) / c[0]
    error = lambda c: (abs(density(c) - (1 - sparsity)), -c[0])
    for width in GROUP_WIDTHS:
        options = [(n, _nearest_degree(n, sparsity, self_loops)) for n in (64, 32, 16, 8, 4)
                   if n <= min(MAX_AUTO_NODES, narrowest // width)]
        options = [c for c in options if c[1] is not None]
        if options and abs(density(best := min(options, key=error)) - (1 - sparsity)) <= 0.25 * (1 - sparsity):
            return best
    candidates = [(n, _nearest_degree(n, sparsity, self_loops)) for n in range(3, max(3, min(MAX_AUTO_NODES,
                                                                                          narrowest)) + 1)]
    return min((c for c in candidates if c[1] is not None), key=error)


def _nearest_degree(nodes, sparsity, self_loops):
    return nearest_degree(nodes, (1 - sparsity) * nodes - self_loops)


def _cost(layer):
    macs, kernel_macs = layer_macs(layer, layer)
    return kernel_macs if macs is not None and kernel_macs else layer.count_params()


def matches(layer, selectors):
    """Whether `layer` is named, is an instance of, or passes one of `selectors` (names, classes, predicates)."""
    for selector in selectors:
        if isinstance(selector, str) and layer.name == selector:
            return True
        if isinstance(selector, type) and isinstance(layer, selector):
            return True
        if callable(selector) and not isinstance(selector, (str, type)) and selector(layer):
            return True
    return False


def _io_shapes(layer):
    """(input shape, output shape) of a single-input layer: from its node in a functional model, else (a
    layer of a subclassed model) from the shape it was built for."""
    try:
        return tuple(layer.input.shape), tuple(layer.output.shape)
    except (AttributeError, ValueError):
        pass
    built_for = list((getattr(layer, "_build_shapes_dict", None) or {}).values())  # Keras 3
    if len(built_for) != 1 or built_for[0] is None:
        return None
    try:
        return tuple(built_for[0]), tuple(layer.compute_output_shape(built_for[0]))
    except Exception:  # a layer that cannot say its output shape: MACs unknown
        return None


def layer_macs(outer, layer):
    """(MACs per sample, the part done by the maskable kernel) or (None, None) when unknown."""
    shapes = _io_shapes(outer)
    if shapes is None or any(dim is None for shape in shapes for dim in shape[1:]):
        return None, None  # unknown, or variable (a sequence of any length): no per-sample count
    input_shape, output_shape = shapes
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    positions = lambda shape: math.prod(shape[2:] if channels_first else shape[1:-1])
    kernel_attribute, layout = prunable_kernel(layer)
    total = kernel_part = 0
    for weight in layer.trainable_weights:
        # Keras 3 variables have a path, tf_keras ones a name like "conv2d/kernel:0"
        name = getattr(weight, "path", weight.name).split("/")[-1].split(":")[0]
        if name in ("bias", "gamma", "beta") or len(weight.shape) < 2:
            continue
        size = math.prod(weight.shape)
        if layout == "conv_transpose":
            count = size * positions(input_shape)
        elif layout == "dense":
            count = size * math.prod(output_shape[1:-1])
        else:
            count = size * positions(output_shape)
        total += count
        if kernel_attribute and name == kernel_attribute:
            kernel_part = count
    return int(total), int(kernel_part)
