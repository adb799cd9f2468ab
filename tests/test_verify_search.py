"""Property tests for the exact automorphism search on unit graphs (asymspec.verify).

Reference answers are computed independently of the code under test: by brute force over all
permutations (<= 7 vertices), or by bliss (python-igraph) on the fully explicit graph with every
edge subdivided (the encoding is written here, not imported), or by closed forms for MLPs.
"""

from __future__ import annotations

import itertools
import math

import igraph as ig
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asymspec.ir.unitgraph import UnitGraph
from asymspec.verify import AutomorphismResult, find_automorphisms, verify_generator
from asymspec.verify.refine import refine

HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------
# independent references
# ------------------------------------------------------------------------------------------


def explicit_edges(ug: UnitGraph) -> dict[tuple[int, int], int]:
    s, d, c = ug.to_explicit()
    edges = {}
    for a, b, col in zip(s.tolist(), d.tolist(), c.tolist(), strict=True):
        assert (a, b) not in edges, "test graph generator produced a multi-edge"
        edges[(a, b)] = col
    return edges


def bliss_order_explicit(ug: UnitGraph) -> int:
    """bliss on the fully explicit graph, every edge subdivided (independent encoding)."""
    s, d, c = ug.to_explicit()
    _, vcol = np.unique(ug.vertex_colour, return_inverse=True)
    _, ecol = np.unique(c, return_inverse=True) if c.shape[0] else (None, np.zeros(0, int))
    base = int(vcol.max()) + 1 if ug.n else 0
    m = s.shape[0]
    w = ug.n + np.arange(m)
    edges = list(zip(s.tolist(), w.tolist(), strict=True))
    edges += list(zip(w.tolist(), d.tolist(), strict=True))
    colours = vcol.ravel().tolist() + (base + ecol.ravel()).tolist()
    g = ig.Graph(n=ug.n + m, edges=edges, directed=True)
    return int(g.count_automorphisms(color=colours))


def is_automorphism(ug: UnitGraph, edges: dict, perm) -> bool:
    vc = ug.vertex_colour
    if any(vc[perm[v]] != vc[v] for v in range(ug.n)):
        return False
    return all(edges.get((perm[a], perm[b])) == c for (a, b), c in edges.items())


def brute_force_group(ug: UnitGraph) -> set[tuple[int, ...]]:
    edges = explicit_edges(ug)
    return {p for p in itertools.permutations(range(ug.n)) if is_automorphism(ug, edges, p)}


def closure(gens: list[tuple[int, ...]], n: int, cap: int = 6000) -> set[tuple[int, ...]]:
    ident = tuple(range(n))
    group = {ident}
    frontier = [ident]
    while frontier:
        nxt = []
        for g in frontier:
            for h in gens:
                gh = tuple(h[g[v]] for v in range(n))
                if gh not in group:
                    group.add(gh)
                    nxt.append(gh)
                    if len(group) > cap:
                        raise AssertionError("group larger than the cap")
        frontier = nxt
    return group


def orbits_of(group: set[tuple[int, ...]], n: int) -> np.ndarray:
    """Orbit ids (numbered by smallest vertex) from an explicit group."""
    orbit = np.full(n, -1, dtype=np.int64)
    k = 0
    for v in range(n):
        if orbit[v] < 0:
            for g in group:
                orbit[g[v]] = k
            k += 1
    return orbit


def check_result(ug: UnitGraph, res: AutomorphismResult) -> None:
    """Internal consistency that holds for every result."""
    assert isinstance(res.order, int) and res.order >= 1
    assert math.isclose(res.log10_order, math.log10(res.order), rel_tol=1e-9, abs_tol=1e-9)
    assert res.is_trivial == (res.order == 1)
    assert res.orbit_id.shape == (ug.n,) and res.orbit_id.dtype == np.int64
    for p in res.generators:
        assert p.shape == (ug.n,)
        assert verify_generator(ug, p)
    if res.is_trivial:
        assert res.generators == []
        assert (res.orbit_id == np.arange(ug.n)).all()


# ------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------


@st.composite
def explicit_graphs(draw, max_n: int = 7) -> UnitGraph:
    n = draw(st.integers(1, max_n))
    ncol = draw(st.integers(1, 3))
    vc = np.array(draw(st.lists(st.integers(0, ncol - 1), min_size=n, max_size=n)))
    src, dst, col = [], [], []
    density = draw(st.sampled_from([0.2, 0.5, 0.8]))
    necol = draw(st.integers(1, 3))
    rnd = draw(st.randoms(use_true_random=False))
    for a in range(n):
        for b in range(n):
            if a != b and rnd.random() < density:
                src.append(a)
                dst.append(b)
                col.append(rnd.randrange(necol))
    return UnitGraph.from_explicit(vc, np.array(src, int), np.array(dst, int), np.array(col, int))


@st.composite
def block_graphs(draw, max_n: int = 9) -> UnitGraph:
    """Random graphs made of dense blocks between vertex segments, overrides and extra edges."""
    n = draw(st.integers(2, max_n))
    rnd = draw(st.randoms(use_true_random=False))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=3)))
    bounds = [0, *cuts, n]
    segs = list(zip(bounds[:-1], bounds[1:], strict=True))
    ncol = draw(st.integers(1, 3))
    if draw(st.booleans()):  # one colour per segment: blocks align with cells
        seg_col = [rnd.randrange(ncol) for _ in segs]
        vc = np.concatenate([np.full(b - a, seg_col[i]) for i, (a, b) in enumerate(segs)])
    else:
        vc = np.array([rnd.randrange(ncol) for _ in range(n)])
    pairs = [(i, j) for i in range(len(segs)) for j in range(len(segs)) if i != j]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=4)) if pairs else []
    bsrc, bdst, bcol = [], [], []
    src, dst, col, eblk = [], [], [], []
    covered = set()
    p_ovr = draw(st.sampled_from([0.0, 0.15, 0.4]))
    for bi, (i, j) in enumerate(chosen):
        (sa, sb), (da, db) = segs[i], segs[j]
        c = rnd.randrange(2)
        bsrc.append((sa, sb))
        bdst.append((da, db))
        bcol.append(c)
        for x in range(sa, sb):
            for y in range(da, db):
                covered.add((x, y))
                if rnd.random() < p_ovr:
                    src.append(x)
                    dst.append(y)
                    col.append(rnd.choice([k for k in range(3) if k != c]))
                    eblk.append(bi)
    p_edge = draw(st.sampled_from([0.0, 0.1, 0.3]))
    for x in range(n):
        for y in range(n):
            if x != y and (x, y) not in covered and rnd.random() < p_edge:
                src.append(x)
                dst.append(y)
                col.append(rnd.randrange(3))
                eblk.append(-1)
    nb = len(bcol)
    return UnitGraph(
        n=n,
        vertex_colour=vc.astype(np.int64),
        src=np.array(src, dtype=np.int64),
        dst=np.array(dst, dtype=np.int64),
        edge_colour=np.array(col, dtype=np.int64),
        edge_block=np.array(eblk, dtype=np.int64),
        block_src=np.array(bsrc, dtype=np.int64).reshape(nb, 2),
        block_dst=np.array(bdst, dtype=np.int64).reshape(nb, 2),
        block_colour=np.array(bcol, dtype=np.int64),
        vertex_node=np.zeros(n, dtype=np.int64),
        vertex_unit=np.arange(n, dtype=np.int64),
    )


def as_explicit(ug: UnitGraph) -> UnitGraph:
    s, d, c = ug.to_explicit()
    return UnitGraph.from_explicit(ug.vertex_colour, s, d, c)


# ------------------------------------------------------------------------------------------
# MLP-shaped unit graphs
# ------------------------------------------------------------------------------------------

TRAIN = 0  # block colour of trainable weights
CONST = 7  # colour of a fixed entry with one constant value


def mlp_graph(
    sizes: list[int],
    masks: list[list[tuple[np.ndarray, np.ndarray]]] | None = None,
) -> UnitGraph:
    """Inputs / outputs get distinct colours, hidden layers one colour each, each weight matrix
    one dense block of colour TRAIN.  ``masks[l][j] = (columns, colours)`` lists the fixed
    entries of row ``j`` of layer ``l`` (override edges)."""
    offs = np.cumsum([0, *sizes])
    n = int(offs[-1])
    vc = np.zeros(n, dtype=np.int64)
    vc[: sizes[0]] = 100 + np.arange(sizes[0])
    for li in range(1, len(sizes) - 1):
        vc[offs[li] : offs[li + 1]] = 10 + li
    vc[offs[-2] :] = 10_000 + np.arange(sizes[-1])
    nl = len(sizes) - 1
    src, dst, col, blk = [], [], [], []
    for li in range(nl):
        for j, (cols, colours) in enumerate(masks[li] if masks else []):
            src.append(offs[li] + np.asarray(cols, dtype=np.int64))
            dst.append(np.full(len(cols), offs[li + 1] + j, dtype=np.int64))
            col.append(np.asarray(colours, dtype=np.int64))
            blk.append(np.full(len(cols), li, dtype=np.int64))

    def cat(parts):
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    return UnitGraph(
        n=n,
        vertex_colour=vc,
        src=cat(src),
        dst=cat(dst),
        edge_colour=cat(col),
        edge_block=cat(blk),
        block_src=np.array([[offs[i], offs[i + 1]] for i in range(nl)], dtype=np.int64),
        block_dst=np.array([[offs[i + 1], offs[i + 2]] for i in range(nl)], dtype=np.int64),
        block_colour=np.full(nl, TRAIN, dtype=np.int64),
        vertex_node=np.zeros(n, dtype=np.int64),
        vertex_unit=np.arange(n, dtype=np.int64),
    )


def gaussian_colours(rng: np.random.Generator, k: int) -> np.ndarray:
    """Fixed float32 values as colour categories through their exact bits (offset past TRAIN)."""
    return rng.standard_normal(k).astype(np.float32).view(np.int32).astype(np.int64) + (1 << 40)


def wasym_masks(sizes, per_row, rng):
    return [
        [
            (
                rng.choice(sizes[li], size=min(per_row, sizes[li]), replace=False),
                gaussian_colours(rng, min(per_row, sizes[li])),
            )
            for _ in range(sizes[li + 1])
        ]
        for li in range(len(sizes) - 1)
    ]


# ------------------------------------------------------------------------------------------
# property tests
# ------------------------------------------------------------------------------------------


@HYP
@given(explicit_graphs())
def test_explicit_matches_brute_force(ug):
    group = brute_force_group(ug)
    res = find_automorphisms(ug)
    check_result(ug, res)
    assert res.order == len(group)
    gens = [tuple(int(v) for v in p) for p in res.generators]
    assert all(g in group for g in gens)
    assert closure(gens, ug.n) == group
    assert (res.orbit_id == orbits_of(group, ug.n)).all()


@HYP
@given(block_graphs(max_n=7))
def test_blocks_match_brute_force(ug):
    group = brute_force_group(ug)
    res = find_automorphisms(ug)
    check_result(ug, res)
    assert res.order == len(group)
    gens = [tuple(int(v) for v in p) for p in res.generators]
    assert closure(gens, ug.n) == group
    assert (res.orbit_id == orbits_of(group, ug.n)).all()


@HYP
@given(block_graphs(max_n=12))
def test_blocks_match_bliss_on_explicit_graph(ug):
    res = find_automorphisms(ug)
    check_result(ug, res)
    assert res.order == bliss_order_explicit(ug)
    assert res.order == find_automorphisms(as_explicit(ug)).order
    if res.order <= 5000:
        gens = [tuple(int(v) for v in p) for p in res.generators]
        group = closure(gens, ug.n)
        assert len(group) == res.order
        assert (res.orbit_id == orbits_of(group, ug.n)).all()


@HYP
@given(block_graphs(max_n=7), st.randoms(use_true_random=False))
def test_verify_generator_is_exact(ug, rnd):
    """verify_generator accepts exactly the automorphisms (fast path and exact fallback)."""
    group = brute_force_group(ug)
    for g in list(group)[:5]:
        assert verify_generator(ug, np.array(g))
    for _ in range(10):
        p = list(range(ug.n))
        rnd.shuffle(p)
        assert verify_generator(ug, np.array(p)) == (tuple(p) in group)
    assert not verify_generator(ug, np.zeros(ug.n, dtype=np.int64)) or ug.n == 1


@HYP
@given(block_graphs(max_n=12))
def test_refinement_of_blocks_equals_refinement_of_explicit_graph(ug):
    """Block sums are exact: the implicit and the materialised graph hash identically."""
    a = refine(ug)
    b = refine(as_explicit(ug))
    assert a.cells == b.cells and a.rounds == b.rounds
    assert (a.colour == b.colour).all()


@HYP
@given(explicit_graphs(max_n=10), st.randoms(use_true_random=False))
def test_refinement_is_invariant(ug, rnd):
    """Renumbering the vertices renumbers the colouring and nothing else."""
    p = list(range(ug.n))
    rnd.shuffle(p)
    p = np.array(p)
    moved = UnitGraph.from_explicit(
        ug.vertex_colour[np.argsort(p)], p[ug.src], p[ug.dst], ug.edge_colour
    )
    a, b = refine(ug), refine(moved)
    assert a.cells == b.cells
    assert (b.colour[p] == a.colour).all()


# ------------------------------------------------------------------------------------------
# MLP-shaped graphs with known answers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[3, 4, 2], [5, 4, 3, 4, 2], [2, 6, 6, 1], [4, 1, 3, 2]])
def test_standard_mlp_closed_form(sizes):
    ug = mlp_graph(sizes)
    res = find_automorphisms(ug)
    check_result(ug, res)
    expected = math.prod(math.factorial(s) for s in sizes[1:-1])
    assert res.order == expected
    assert res.num_orbits == sizes[0] + sizes[-1] + len(sizes) - 2
    offs = np.cumsum([0, *sizes])
    for li in range(1, len(sizes) - 1):
        assert len(set(res.orbit_id[offs[li] : offs[li + 1]].tolist())) == 1
    if sum(sizes) <= 12 and expected <= 5000:
        gens = [tuple(int(v) for v in p) for p in res.generators]
        assert len(closure(gens, ug.n)) == expected
    assert res.order == bliss_order_explicit(ug)


def test_standard_mlp_784_matches_note():
    ug = mlp_graph([784, 512, 512, 512, 10])
    res = find_automorphisms(ug)
    assert abs(res.log10_order - 3 * math.lgamma(513) / math.log(10)) < 1e-6
    assert round(res.log10_order, 2) == 3499.62
    assert res.num_orbits == 797
    assert res.order == math.factorial(512) ** 3
    assert len(res.generators) == 6
    assert all(verify_generator(ug, p) for p in res.generators)


def test_wasym_mlp_is_trivial_by_refinement():
    rng = np.random.default_rng(0)
    sizes = [20, 16, 16, 4]
    ug = mlp_graph(sizes, wasym_masks(sizes, 5, rng))
    res = find_automorphisms(ug)
    check_result(ug, res)
    assert res.is_trivial
    assert res.certificate["kind"] == "discrete-refinement"
    assert res.certificate["cells"] == ug.n
    assert res.certificate["rounds"] >= 1
    assert bliss_order_explicit(ug) == 1


def test_wasym_mlp_784_is_trivial_fast():
    rng = np.random.default_rng(1)
    sizes = [784, 512, 512, 512, 10]
    ug = mlp_graph(sizes, wasym_masks(sizes, 64, rng))
    res = find_automorphisms(ug)
    assert res.is_trivial and res.certificate["kind"] == "discrete-refinement"
    assert res.certificate["rounds"] <= 2


def test_two_identical_mask_rows_give_exactly_their_swap():
    rng = np.random.default_rng(3)
    sizes = [8, 6, 5, 3]
    masks = wasym_masks(sizes, 3, rng)
    j1, j2 = 1, 4
    masks[0][j2] = (masks[0][j1][0].copy(), masks[0][j1][1].copy())
    # layer 2 rows: distinct masks that do not touch the twin columns
    allowed = np.array([c for c in range(sizes[1]) if c not in (j1, j2)])
    masks[1] = [
        (rng.choice(allowed, size=2, replace=False), gaussian_colours(rng, 2))
        for _ in range(sizes[2])
    ]
    ug = mlp_graph(sizes, masks)
    res = find_automorphisms(ug)
    check_result(ug, res)
    assert res.order == 2
    swap = np.arange(ug.n)
    a, b = sizes[0] + j1, sizes[0] + j2
    swap[a], swap[b] = b, a
    assert len(res.generators) == 1 and (res.generators[0] == swap).all()
    assert res.num_orbits == ug.n - 1 and res.orbit_id[a] == res.orbit_id[b]
    assert bliss_order_explicit(ug) == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constant_sparse_masks_need_the_exact_search(seed):
    """Masks with one constant value: refinement alone can stay coarse; bliss settles it."""
    rng = np.random.default_rng(seed)
    sizes = [6, 8, 8, 2]
    masks = []
    for li in range(len(sizes) - 1):
        rows = []
        for _ in range(sizes[li + 1]):
            cols = rng.choice(sizes[li], size=2, replace=False)
            rows.append((cols, np.full(2, CONST)))
        masks.append(rows)
    ug = mlp_graph(sizes, masks)
    res = find_automorphisms(ug)
    check_result(ug, res)
    assert res.order == bliss_order_explicit(ug)


def test_mirror_branches_materialise_partial_blocks():
    """Two inputs of one colour, each feeding its own 2-unit branch (block ranges are not unions
    of cells): the group swaps the branches and permutes within each, order 2*2*2."""
    vc = np.array([0, 0, 1, 1, 1, 1, 2])
    ug = UnitGraph(
        n=7,
        vertex_colour=vc,
        src=np.zeros(0, dtype=np.int64),
        dst=np.zeros(0, dtype=np.int64),
        edge_colour=np.zeros(0, dtype=np.int64),
        edge_block=np.zeros(0, dtype=np.int64),
        block_src=np.array([[0, 1], [1, 2], [2, 6]]),
        block_dst=np.array([[2, 4], [4, 6], [6, 7]]),
        block_colour=np.array([0, 0, 0]),
        vertex_node=np.zeros(7, dtype=np.int64),
        vertex_unit=np.arange(7, dtype=np.int64),
    )
    res = find_automorphisms(ug)
    check_result(ug, res)
    assert res.order == 8 == len(brute_force_group(ug))
    assert res.certificate["reduced"]["block_edges_materialised"] == 4


def test_representation_independent_verification():
    """A block edge and an explicit edge of the same colour are interchangeable: the swap is an
    automorphism although it does not map the block onto a block (exact fallback)."""
    ug = UnitGraph(
        n=4,
        vertex_colour=np.array([0, 0, 1, 1]),
        src=np.array([1]),
        dst=np.array([3]),
        edge_colour=np.array([5]),
        edge_block=np.array([-1]),
        block_src=np.array([[0, 1]]),
        block_dst=np.array([[2, 3]]),
        block_colour=np.array([5]),
        vertex_node=np.zeros(4, dtype=np.int64),
        vertex_unit=np.arange(4, dtype=np.int64),
    )
    res = find_automorphisms(ug)
    assert res.order == 2
    assert verify_generator(ug, np.array([1, 0, 3, 2]))
    assert not verify_generator(ug, np.array([1, 0, 2, 3]))


def test_generator_options():
    ug = mlp_graph([3, 5, 4, 2])
    full = find_automorphisms(ug)
    assert len(full.generators) == 4
    none = find_automorphisms(ug, want_generators=False)
    assert none.generators == [] and none.order == full.order
    assert (none.orbit_id == full.orbit_id).all()
    capped = find_automorphisms(ug, max_generators=1)
    assert len(capped.generators) == 1 and capped.certificate["generators_truncated"]


def test_invalid_graphs_are_rejected():
    base = dict(
        n=4,
        vertex_colour=np.zeros(4, dtype=np.int64),
        vertex_node=np.zeros(4, dtype=np.int64),
        vertex_unit=np.arange(4, dtype=np.int64),
    )
    overlapping = UnitGraph(
        src=np.zeros(0, dtype=np.int64),
        dst=np.zeros(0, dtype=np.int64),
        edge_colour=np.zeros(0, dtype=np.int64),
        edge_block=np.zeros(0, dtype=np.int64),
        block_src=np.array([[0, 2], [1, 2]]),
        block_dst=np.array([[2, 4], [3, 4]]),
        block_colour=np.array([0, 1]),
        **base,
    )
    with pytest.raises(ValueError):
        find_automorphisms(overlapping)
    duplicate = UnitGraph.from_explicit(
        np.zeros(3, dtype=np.int64), np.array([0, 0]), np.array([1, 1]), np.array([0, 1])
    )
    with pytest.raises(ValueError):
        verify_generator(duplicate, np.arange(3))
    out_of_range = UnitGraph.from_explicit(
        np.zeros(2, dtype=np.int64), np.array([0]), np.array([2]), np.array([0])
    )
    with pytest.raises(ValueError):
        find_automorphisms(out_of_range)


def test_empty_and_edgeless_graphs():
    res = find_automorphisms(UnitGraph.from_explicit(np.zeros(0, dtype=np.int64), [], [], []))
    assert res.order == 1 and res.orbit_id.shape == (0,)
    res = find_automorphisms(UnitGraph.from_explicit(np.array([0, 0, 0, 1, 1]), [], [], []))
    assert res.order == 12 and res.num_orbits == 2
