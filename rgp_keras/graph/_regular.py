"""`RegularGraph`: an immutable connected simple k-regular graph, and its file format."""

import base64
import io
import json
import os
import secrets
import tempfile
import warnings
import zipfile
from fractions import Fraction

import numpy as np

from rgp_keras._checks import check_fraction, check_int
from rgp_keras._files import normal_file_mode
from rgp_keras.errors import InputValueError
from rgp_keras.graph._bfs import distance_stats

# A graph pruning further than this from the sparsity asked for is announced by a warning.
SPARSITY_TOLERANCE = 0.02

FORMAT_NAME = "rgp_keras.RegularGraph"
FORMAT_VERSION = 1


def check_size(nodes, degree):
    """Validate a (nodes, degree) pair for a simple k-regular graph; return them as ints."""
    nodes = check_int("nodes", nodes, minimum=3)
    degree = check_int("degree", degree, minimum=2)
    if degree >= nodes:
        raise InputValueError(
            f"`degree` must be smaller than `nodes` (a simple graph on {nodes} nodes has "
            f"degree at most {nodes - 1}), got degree={degree}."
        )
    if nodes * degree % 2:
        raise InputValueError(
            f"No {degree}-regular graph on {nodes} nodes exists: nodes * degree must be even "
            f"(got {nodes} * {degree} = {nodes * degree}). Use an even degree or an even node count."
        )
    return nodes, degree


def check_symmetry(nodes, symmetry):
    """Validate a rotational symmetry order for graphs on `nodes` nodes; return it as an int."""
    symmetry = check_int("symmetry", symmetry, minimum=1)
    if nodes % symmetry:
        raise InputValueError(
            f"`symmetry` must divide the node count (got symmetry={symmetry}, nodes={nodes}); "
            f"symmetry=1 (no symmetry) is always accepted."
        )
    return symmetry


def _pairing(nodes, degree, rng):
    """Edges `(m, 2)` of a simple `degree`-regular graph by Steger-Wormald pairing, or None on a dead end.

    Each node has `degree` stubs; stubs are shuffled and paired, pairs that
    would make a loop or a repeated edge go back to the pool, and the pool is
    paired again until it is empty (or only unusable pairs are left).
    """
    edges = set()
    pool = np.repeat(np.arange(nodes), degree)
    while len(pool):
        pairs = np.sort(rng.permutation(pool).reshape(-1, 2), axis=1)
        left = []
        for a, b in pairs.tolist():
            if a != b and (a, b) not in edges:
                edges.add((a, b))
            else:
                left += [a, b]
        if len(left) == len(pool):
            ends = sorted(set(left))
            if not any(a < b and (a, b) not in edges for a in ends for b in ends):
                return None  # every remaining pair is a loop or an existing edge
        pool = np.array(left, dtype=np.int64)
    return np.array(sorted(edges), dtype=np.int64).reshape(-1, 2)


def _circulant(nodes, degree):
    """Adjacency joining each node to its `degree // 2` nearest on either side of a circle,
    and to the opposite node when `degree` is odd (then `nodes` is even)."""
    index = np.arange(nodes)
    offsets = (index[None, :] - index[:, None]) % nodes
    adjacency = (np.minimum(offsets, nodes - offsets) <= degree // 2) & (offsets > 0)
    if degree % 2:
        adjacency |= offsets == nodes // 2
    return adjacency


def moore_bound(nodes, degree):
    """Lower bound on the ASPL of any `degree`-regular graph on `nodes` nodes.

    From any node at most k(k-1)^(d-1) nodes lie at distance d; filling the
    distances 1, 2, ... greedily until the other n-1 nodes are placed gives the
    smallest possible distance sum.

    Example:
    >>> round(moore_bound(64, 4), 4)
    2.8571
    """
    nodes, degree = check_size(nodes, degree)
    return moore_total(nodes, degree) / (nodes - 1)


def moore_total(nodes, degree):
    """Smallest possible sum of distances from one node to all others."""
    remaining, total, distance, layer = nodes - 1, 0, 1, degree
    while remaining > 0:
        placed = min(layer, remaining)
        total += distance * placed
        remaining -= placed
        distance += 1
        layer *= degree - 1
    return total


def nearest_degree(nodes, wanted):
    """The valid degree on `nodes` nodes nearest `wanted` (the smaller on a tie), or None when none is."""
    valid = [k for k in range(2, nodes) if nodes * k % 2 == 0]
    return min(valid, key=lambda k: (abs(k - wanted), k), default=None)


def degree_for_sparsity(nodes, sparsity, self_loops=False):
    """The valid degree whose sparsity `1 - (degree + self_loops) / nodes` is nearest to `sparsity`.

    Read the sparsity actually achieved back as `1 - (degree + self_loops) / nodes`;
    `warn_if_sparsity_differs` says when it is far from the one asked for.

    Example:
    >>> degree_for_sparsity(64, 0.875)
    8
    """
    nodes = check_int("nodes", nodes, minimum=3)
    sparsity = check_fraction("sparsity", sparsity)
    wanted = (1 - sparsity) * nodes - self_loops
    valid = [k for k in range(2, nodes) if nodes * k % 2 == 0]
    best = nearest_degree(nodes, wanted)
    if abs(best - wanted) > 1:
        raise InputValueError(
            f"`sparsity`={sparsity} needs degree {wanted:.3g} on {nodes} nodes, but degrees "
            f"{valid[0]}..{valid[-1]} are possible: sparsity between {1 - (valid[-1] + self_loops) / nodes:.4g} "
            f"and {1 - (valid[0] + self_loops) / nodes:.4g} is accepted on {nodes} nodes."
        )
    return best


def exact_nodes(density, limit, self_loops=False):
    """The largest n <= `limit` with a valid degree k, (k + self_loops) / n == `density` exactly; None if none.

    Example:
    >>> exact_nodes(0.25, 64), exact_nodes(1 / 8, 15)
    (64, None)
    """
    density = Fraction(density).limit_denominator(10_000)
    for nodes in range(limit, 2, -1):
        degree = density * nodes - self_loops
        if degree.denominator == 1 and 2 <= degree < nodes and nodes * degree % 2 == 0:
            return nodes
    return None


def warn_if_sparsity_differs(sparsity, nodes, degree, self_loops=False):
    """Warn when the `nodes`/`degree` graph prunes more than `SPARSITY_TOLERANCE` away from the `sparsity` asked.

    The warning says what was asked and what is built, and names the node
    counts up to 64 that give `sparsity` exactly.
    """
    built = 1 - (degree + self_loops) / nodes
    if abs(built - sparsity) <= SPARSITY_TOLERANCE:
        return
    exact = [n for n in range(64, 2, -1) if exact_nodes(1 - sparsity, n, self_loops) == n]
    if exact:
        listed = ", ".join(map(str, exact[:5])) + (", ..." if len(exact) > 5 else "")
        fix = f"nodes={listed} give {sparsity:g} exactly."
    else:
        fix = "no node count up to 64 gives it exactly; pass `nodes` and `degree` for the graph you want."
    warnings.warn(
        f"Asked for sparsity {sparsity:g}; on {nodes} nodes the nearest valid degree is {degree}"
        f"{' (plus self-loops)' if self_loops else ''}, so the graph {nodes}/{degree} prunes {built:.4g}, "
        f"{100 * abs(built - sparsity):.1f} points {'more' if built > sparsity else 'less'} than asked: {fix}",
        stacklevel=3,
    )


class RegularGraph:
    """A connected, simple, undirected k-regular graph: the pruning pattern of RGP.

    Immutable: the adjacency is a read-only boolean array, and statistics
    (ASPL, diameter) are computed once on first use.

    Args:
        adjacency: square 0/1 (or boolean) array, symmetric, no self-loops,
            every row summing to the same degree, connected.
        metadata: optional dict of JSON-serialisable facts about how the graph
            was made (seed, method, ...); saved with the graph.

    Example:
    >>> graph = RegularGraph.random(64, 8, seed=0)
    >>> graph.nodes, graph.degree, graph.sparsity
    (64, 8, 0.875)
    """

    __slots__ = ("_adjacency", "_neighbors", "_metadata", "_stats")

    def __init__(self, adjacency, metadata=None):
        adjacency = _validated_adjacency(adjacency)
        adjacency.flags.writeable = False
        self._adjacency = adjacency
        neighbors = np.nonzero(adjacency)[1].reshape(adjacency.shape[0], -1).astype(np.intp)
        neighbors.flags.writeable = False
        self._neighbors = neighbors
        self._metadata = dict(metadata or {})
        total, diameter = distance_stats(neighbors)
        if total < 0:
            raise InputValueError(
                "`adjacency` describes a disconnected graph; RGP needs a connected regular graph."
            )
        self._stats = (total, diameter)

    @classmethod
    def from_adjacency(cls, adjacency, metadata=None):
        """Build a graph from an adjacency matrix, validating it (see the class docstring)."""
        return cls(adjacency, {"method": "adjacency", **(metadata or {})})

    @classmethod
    def random(cls, nodes, degree, seed=None, symmetry=1):
        """A uniformly drawn connected simple `degree`-regular graph on `nodes` nodes.

        Drawn by Steger and Wormald's pairing algorithm (asymptotically
        uniform) with its own seeded numpy generator, redrawn until connected;
        no global random state (Python's, numpy's or igraph's) is used or
        changed. The seed actually used is stored in `metadata["seed"]`, so any
        graph can be regenerated.

        With `symmetry` = g > 1 the graph is instead unchanged by the rotation
        v -> v + n / g (g must divide n): a circulant graph (each node joined
        to its k // 2 nearest on either side, and to the opposite node when k
        is odd) scrambled by 20 n k / g random orbit swaps, the start for
        `optimize(..., symmetry=g)`. With an odd degree the opposite-node
        edges are kept as they are (swapping one would break the symmetry).
        """
        nodes, degree = check_size(nodes, degree)
        seed = secrets.randbelow(2**32) if seed is None else check_int("seed", seed, minimum=0)
        symmetry = check_symmetry(nodes, symmetry)
        if symmetry > 1:
            return cls._random_symmetric(nodes, degree, seed, symmetry)
        rng = np.random.default_rng(seed)
        # Above half degree, pair the complement (far fewer stubs, no dead ends) and invert it.
        complement = degree > (nodes - 1) // 2
        while True:
            edges = _pairing(nodes, nodes - 1 - degree if complement else degree, rng)
            if edges is None:
                continue
            adjacency = np.zeros((nodes, nodes), dtype=bool)
            adjacency[edges[:, 0], edges[:, 1]] = adjacency[edges[:, 1], edges[:, 0]] = True
            if complement:
                adjacency = ~adjacency & ~np.eye(nodes, dtype=bool)
            if _is_connected(adjacency):
                break
        return cls(adjacency, {"method": "random", "seed": seed})

    @classmethod
    def _random_symmetric(cls, nodes, degree, seed, symmetry):
        # numba is imported here, not with the package.
        import rgp_keras.graph._anneal as kernel

        kernel.announce_compilation()
        adjacency = _circulant(nodes, degree)
        neighbors = np.nonzero(adjacency)[1].reshape(nodes, degree).astype(np.int64)
        kernel.seed(seed)
        kernel.scramble(neighbors, adjacency, nodes // symmetry, 20 * nodes * degree // symmetry)
        return cls(adjacency, {"method": "random", "seed": seed, "symmetry": symmetry})

    def is_symmetric(self, symmetry):
        """Whether the graph is unchanged by the rotation v -> v + n / `symmetry` of the node labels."""
        symmetry = check_int("symmetry", symmetry, minimum=1)
        if self.nodes % symmetry:
            return False
        shift = self.nodes // symmetry
        return bool(np.array_equal(np.roll(self._adjacency, (shift, shift), axis=(0, 1)), self._adjacency))

    @classmethod
    def ring_lattice(cls, nodes, degree):
        """Nodes on a circle, each joined to its `degree / 2` nearest on either side.

        This is the connected regular graph with (near) the highest ASPL: the
        paper's worst case, useful for ablations. Needs an even degree.
        """
        nodes, degree = check_size(nodes, degree)
        if degree % 2:
            raise InputValueError(
                f"`ring_lattice` supports even degrees only, got degree={degree}. For an odd degree "
                "use RegularGraph.random(...) and optimize(graph, 'max') for a high-ASPL graph."
            )
        return cls(_circulant(nodes, degree), {"method": "ring_lattice"})

    @classmethod
    def load(cls, path):
        """Read a graph written by `save`; never unpickles."""
        try:
            # numpy leaves the file open when it cannot read it; our own handle is always closed
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
                contents = {key: archive[key] for key in archive.files}
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise InputValueError(f"{path!s} is not a readable graph file ({error}).") from None
        return cls._from_archive(contents, path)

    @classmethod
    def _from_archive(cls, contents, path):
        if set(contents) != {"format", "version", "adjacency", "metadata"} or str(
            contents["format"]
        ) != FORMAT_NAME:
            raise InputValueError(
                f"{path!s} is not an rgp_keras graph file: expected the arrays format, version, "
                f"adjacency and metadata written by RegularGraph.save, found {sorted(contents)}."
            )
        version = int(contents["version"])
        if version > FORMAT_VERSION:
            raise InputValueError(
                f"{path!s} has graph format version {version}, written by a newer rgp_keras; "
                f"this version reads format versions up to {FORMAT_VERSION}. Upgrade rgp_keras."
            )
        metadata = json.loads(str(contents["metadata"]))
        nodes = metadata.get("nodes")
        if not isinstance(nodes, int) or nodes < 3:
            raise InputValueError(f"{path!s} is inconsistent: metadata has no valid node count.")
        packed = contents["adjacency"]
        if packed.dtype != np.uint8 or packed.size * 8 < nodes * nodes:
            raise InputValueError(f"{path!s} is inconsistent: the adjacency does not hold {nodes} nodes.")
        adjacency = np.unpackbits(packed, count=nodes * nodes).reshape(nodes, nodes)
        graph = cls(adjacency, metadata)
        if metadata.get("degree") != graph.degree or not np.isclose(
            metadata.get("aspl", np.nan), graph.aspl, rtol=0, atol=1e-9
        ):
            raise InputValueError(
                f"{path!s} is inconsistent: metadata says degree {metadata.get('degree')}, ASPL "
                f"{metadata.get('aspl')}, the adjacency has degree {graph.degree}, ASPL {graph.aspl}."
            )
        return graph

    def save(self, path):
        """Write the graph to `path` (a compressed .npz; see `FORMAT_NAME`, `FORMAT_VERSION`).

        The file holds the bit-packed adjacency and JSON metadata (nodes,
        degree, ASPL, diameter, how the graph was made). It is written to a
        temporary file first, so a failed save leaves nothing behind.
        """
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            format=np.array(FORMAT_NAME),
            version=np.array(FORMAT_VERSION),
            adjacency=np.packbits(self._adjacency),
            metadata=np.array(json.dumps(self.metadata)),
        )
        directory = os.path.dirname(os.path.abspath(path))
        handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(buffer.getvalue())
            os.chmod(temporary, normal_file_mode())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise

    def get_config(self):
        """A JSON-serialisable dict (node count, base64 bit-packed adjacency), as stored in layer configs."""
        packed = np.packbits(self._adjacency).tobytes()
        return {"nodes": self.nodes, "adjacency": base64.b64encode(packed).decode("ascii")}

    @classmethod
    def from_config(cls, config):
        """The graph written by `get_config` (validated again)."""
        nodes = config["nodes"]
        packed = np.frombuffer(base64.b64decode(config["adjacency"]), dtype=np.uint8)
        return cls(np.unpackbits(packed, count=nodes * nodes).reshape(nodes, nodes))

    @property
    def nodes(self):
        return self._adjacency.shape[0]

    @property
    def degree(self):
        return self._neighbors.shape[1]

    @property
    def sparsity(self):
        """Fraction of channel-group pairs pruned: `1 - degree / nodes`."""
        return 1 - self.degree / self.nodes

    @property
    def adjacency(self):
        """Read-only `(nodes, nodes)` boolean adjacency matrix."""
        return self._adjacency

    @property
    def neighbors(self):
        """Read-only `(nodes, degree)` array: row i lists the neighbours of node i, ascending."""
        return self._neighbors

    @property
    def edges(self):
        """`(nodes * degree / 2, 2)` array of edges `(i, j)` with `i < j`, sorted."""
        return np.argwhere(np.triu(self._adjacency))

    @property
    def aspl(self):
        """Average shortest path length over all unordered node pairs."""
        return self._stats[0] / (self.nodes * (self.nodes - 1) / 2)

    @property
    def diameter(self):
        return self._stats[1]

    @property
    def moore_bound(self):
        """The lowest ASPL any k-regular graph on this many nodes can have."""
        return moore_bound(self.nodes, self.degree)

    @property
    def gap(self):
        """Relative distance to the Moore bound: `aspl / moore_bound - 1` (0 is optimal)."""
        return self.aspl / self.moore_bound - 1

    @property
    def metadata(self):
        """Facts about the graph: nodes, degree, ASPL, diameter, and how it was made."""
        return {
            **self._metadata,
            "nodes": self.nodes,
            "degree": self.degree,
            "aspl": self.aspl,
            "diameter": self.diameter,
        }

    def to_igraph(self):
        """The same graph as an `igraph.Graph`."""
        import igraph  # on use: with matplotlib installed, importing igraph takes about a second

        return igraph.Graph(n=self.nodes, edges=self.edges.tolist())

    def __eq__(self, other):
        if not isinstance(other, RegularGraph):
            return NotImplemented
        return np.array_equal(self._adjacency, other._adjacency)

    def __hash__(self):
        return hash(self._adjacency.tobytes())

    def __repr__(self):
        return (
            f"RegularGraph(nodes={self.nodes}, degree={self.degree}, aspl={self.aspl:.4f}, "
            f"diameter={self.diameter}, moore_bound={self.moore_bound:.4f})"
        )


def _validated_adjacency(adjacency):
    """Return `adjacency` as a fresh boolean array, or raise saying what is wrong with it."""
    if isinstance(adjacency, RegularGraph):
        return adjacency.adjacency.copy()
    array = np.asarray(adjacency)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise InputValueError(f"`adjacency` must be a square 2-D array, got shape {array.shape}.")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number) or not np.isin(array, (0, 1)).all():
            raise InputValueError("`adjacency` must hold only 0/1 (or False/True) entries.")
    array = array.astype(bool)
    nodes = array.shape[0]
    if nodes < 3:
        raise InputValueError(f"`adjacency` must have at least 3 nodes, got {nodes}.")
    if array.diagonal().any():
        loops = np.flatnonzero(array.diagonal())
        raise InputValueError(f"`adjacency` has self-loops at nodes {loops[:5].tolist()}; RGP graphs have none.")
    if not np.array_equal(array, array.T):
        raise InputValueError("`adjacency` must be symmetric (an undirected graph).")
    degrees = array.sum(axis=1)
    if degrees.min() != degrees.max():
        raise InputValueError(
            f"`adjacency` is not regular: node degrees range from {degrees.min()} to {degrees.max()}; "
            "every node must have the same degree."
        )
    check_size(nodes, int(degrees[0]))
    return array


def _is_connected(adjacency):
    """Whether the graph of a boolean adjacency matrix is connected (breadth-first from node 0)."""
    reached = frontier = np.eye(len(adjacency), 1, dtype=bool)[:, 0]
    while frontier.any():
        frontier = adjacency[frontier].any(axis=0) & ~reached
        reached = reached | frontier
    return bool(reached.all())
