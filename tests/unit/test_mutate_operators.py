"""Mutation operators on recorded Linux 7.2.13 functions and on text made to trip them; the patches
(golden, and every one through `git apply --check`); sampling and sharding.

Set TESTBED_REGEN_GOLDEN=1 to rewrite tests/golden/mutate/*.patch after an intended change.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.mutate.generate import Mutant, mutants_of, sample, shard
from testbed.mutate.operators import OPERATORS, SIBLINGS

from .git_repos import git

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mutate"
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "mutate"
REGEN = os.environ.get("TESTBED_REGEN_GOLDEN") == "1"
VFIO = "drivers/vfio/pci/vfio_pci_dmabuf.c"
DMABUF = "drivers/dma-buf/dma-buf-mapping.c"
P2PDMA = "drivers/pci/p2pdma.c"
FILES = (VFIO, DMABUF, P2PDMA)


def source(path: str) -> str:
    return (FIXTURES / path).read_text()


def edits(path: str, function: str, operator: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """(first line, last line, what they become) of each `operator` mutant of `function`."""
    found = mutants_of(path, source(path), [function], [operator])
    return [(m.first_line, m.last_line, m.replacement) for m in found]


def lines_of(path: str, first: int, last: int) -> list[str]:
    return source(path).split("\n")[first - 1 : last]


# --- each operator on real functions


def test_drop_call_deletes_whole_statements_and_keeps_assertions():
    found = edits(VFIO, "vfio_pci_dma_buf_move", "drop-call")
    assert (351, 351, ()) in found  # dma_buf_invalidate_mappings(priv->dmabuf);
    assert (352, 354, ()) in found  # dma_resv_wait_timeout(...) over three lines, deleted whole
    assert (376, 376, ()) in found  # fput()
    assert 341 not in [first for first, _, _ in found]  # lockdep_assert_held_write(): no run can tell
    assert [first for first, _, _ in found] == [348, 351, 352, 355, 357, 358, 368, 369, 371, 373, 376]


def test_drop_call_keeps_a_body_for_the_statement_that_needed_one():
    # `if (ret < 0)\n\t\tdma_buf_put(priv->dmabuf);`: the if keeps an (empty) body
    assert (321, 321, ("\t\t{ }",)) in edits(VFIO, "vfio_pci_core_feature_dma_buf", "drop-call")
    # the body of `for_each_sgtable_dma_sg(...)`, a loop macro
    assert (250, 251, ("\t\t\t{ }",)) in edits(DMABUF, "dma_buf_free_sgt", "drop-call")


def test_drop_call_skips_declarations_assignments_and_returns():
    firsts = [first for first, _, _ in edits(VFIO, "vfio_pci_core_feature_dma_buf", "drop-call")]
    assert 227 not in firsts  # DEFINE_DMA_BUF_EXPORT_INFO(exp_info); declares exp_info
    assert 235 not in firsts and 259 not in firsts  # ret = ...(...);
    assert 297 not in firsts  # priv->dmabuf = dma_buf_export(&exp_info);
    assert [first for first, _, _ in edits(VFIO, "vfio_pci_core_get_dmabuf_phys", "drop-call")] == []


def test_negate_if_turns_the_check_round():
    assert edits(VFIO, "vfio_pci_dma_buf_attach", "negate-if")[0] == (30, 30, ("\tif (attachment->peer2peer)",))
    assert (347, 347, ("\t\tif (!(priv->revoked != revoked)) {",)) in edits(VFIO, "vfio_pci_dma_buf_move", "negate-if")
    assert (182, 182, ("\tif (*provider)",)) in edits(VFIO, "vfio_pci_core_get_dmabuf_phys", "negate-if")
    # `!(a & b)` loses its `!`, keeping its parentheses
    assert (284, 284, ("\t\tif ((pci_resource_flags(pdev, i) & IORESOURCE_MEM))",)) in edits(
        P2PDMA, "pcim_p2pdma_init", "negate-if"
    )


def test_negate_if_over_several_lines_changes_only_the_first_and_last():
    [multi] = [e for e in edits(VFIO, "vfio_pci_core_fill_phys_vec", "negate-if") if e[0] == 158]
    first, last, new = multi
    assert (first, last) == (158, 161)
    assert new[0] == "\t\tif (!(check_add_overflow(start, dma_ranges[i].offset,"
    assert new[1:3] == tuple(lines_of(VFIO, 159, 160))
    assert new[3] == "\t\t\t\t       dma_ranges[i].length, &end)))"


def test_drop_if_never_takes_the_branch():
    assert (356, 356, ("\t\t\tif (0) {",)) in edits(VFIO, "vfio_pci_dma_buf_move", "drop-if")
    # a condition over two lines becomes one line
    assert (250, 251, ("\tif (0)",)) in edits(VFIO, "vfio_pci_core_feature_dma_buf", "drop-if")
    assert (207, 207, ("\t} else if (0) {",)) in edits(DMABUF, "dma_buf_phys_vec_to_sgt", "drop-if")


def test_return_zero_reports_success_on_the_error_path():
    assert edits(VFIO, "vfio_pci_dma_buf_map", "return-zero") == [(60, 60, ("\t\treturn NULL;",))]
    assert edits(VFIO, "vfio_pci_dma_buf_attach", "return-zero") == [
        (31, 31, ("\t\treturn 0;",)),
        (34, 34, ("\t\treturn 0;",)),
        (37, 37, ("\t\treturn 0;",)),
    ]
    # `ret = -ENOMEM;` right before `goto err_...;`; `return ret;` and `return PTR_ERR(...)` are left alone
    assert edits(VFIO, "vfio_pci_core_feature_dma_buf", "return-zero")[-3:] == [
        (265, 265, ("\t\tret = 0;",)),
        (270, 270, ("\t\tret = 0;",)),
        (288, 288, ("\t\tret = 0;",)),
    ]


def test_bound_flips_relational_operators_in_conditions_only():
    assert edits(VFIO, "vfio_pci_core_fill_phys_vec", "bound") == [
        (152, 152, ("\tfor (i = 0; i <= nr_ranges; i++) {",)),
        (163, 163, ("\t\tif (end >= max_addr)",)),
    ]
    assert edits(P2PDMA, "pci_p2pmem_find_many", "bound")[:2] == [
        (907, 907, ("\t\tif (distance <= 0 || distance > closest_distance)",)),
        (907, 907, ("\t\tif (distance < 0 || distance >= closest_distance)",)),
    ]
    # `->` everywhere, `<<` in map_types_idx(): no comparison, no mutant
    assert edits(P2PDMA, "map_types_idx", "bound") == []
    assert edits(VFIO, "vfio_pci_dma_buf_move", "bound") == []


def test_swap_sibling_uses_the_table_and_spares_case_labels():
    found = edits(DMABUF, "dma_buf_phys_vec_to_sgt", "swap-sibling")
    assert (161, 161, ("\t\t\t\t\t    0);",)) in found  # DMA_ATTR_MMIO -> 0
    assert all(first not in (125, 130) for first, _, _ in found)  # case PCI_P2PDMA_MAP_...: would duplicate
    assert edits(P2PDMA, "calc_map_type_and_dist", "swap-sibling")[0] == (
        704,
        704,
        ("\tenum pci_p2pdma_map_type map_type = PCI_P2PDMA_MAP_BUS_ADDR;",),
    )
    assert (350, 350, ("\t\t\t\tpriv->revoked = false;",)) in edits(VFIO, "vfio_pci_dma_buf_move", "swap-sibling")
    assert SIBLINGS["DMA_TO_DEVICE"] == "DMA_FROM_DEVICE" and SIBLINGS["DMA_FROM_DEVICE"] == "DMA_TO_DEVICE"


def test_drop_early_return_removes_the_whole_check():
    assert edits(VFIO, "vfio_pci_dma_buf_move", "drop-early-return") == [(344, 345, ())]  # if (...) continue;
    # the comment between the if and its return goes with them
    assert (116, 118, ()) in edits(DMABUF, "dma_buf_phys_vec_to_sgt", "drop-early-return")
    # an `else if` with a single return is no statement of its own: deleting it would re-attach the else
    assert edits(P2PDMA, "pci_p2pdma_enable_store", "drop-early-return") == []
    # a body of two statements (`ret = -ENOMEM; goto ...;`) is no early return
    assert [e[0] for e in edits(VFIO, "vfio_pci_core_feature_dma_buf", "drop-early-return")] == [
        232,
        237,
        240,
        243,
        250,
        256,
        260,
        281,
    ]


# --- text made to trip the operators

TRICKY = r"""static int tricky(struct foo *f, int n)
{
	int i;

	/* if (a < b) foo(); return -EINVAL; */
	pr_info("if (x < y) bar(); true\n");
	if (f->shift << 2 > n ||
		(f->len >> 1) < f->max)
		return -EINVAL;
#if defined(CONFIG_X) && CONFIG_Y < 2
	do_x(f);
#endif
	for (i = 0; i < n; i++)
		if (f->ops->check(f, i))
			wake(f);
		else
			sleep_on(f);
	(void)flush(f);
	x = cond ? a : call(b);
	if (n)
		goto out;
	else
		n++;
	unlock(f);
out:
	put(f);
}
"""


def tricky(operator: str) -> list[tuple[int, int, tuple[str, ...]]]:
    found = mutants_of("drivers/x/tricky.c", TRICKY, None, [operator])
    return [(m.first_line, m.last_line, m.replacement) for m in found]


def test_nothing_in_comments_strings_or_preprocessor_lines_is_mutated():
    for operator in OPERATORS:
        for first, last, new in tricky(operator):
            assert not {first, last} & {5, 10, 12}, operator
            # the pr_info() call may go, whole; nothing in its string changes
            assert 6 not in (first, last) or (operator, new) == ("drop-call", ()), operator


def test_drop_call_statement_boundaries():
    found = tricky("drop-call")
    assert (15, 15, ("\t\t\t{ }",)) in found  # the if's body
    assert (17, 17, ("\t\t\t{ }",)) in found  # the else's body
    assert (24, 24, ()) in found  # unlock(f);
    assert (26, 26, ("\t{ }",)) in found  # `out:` must be followed by a statement
    assert 18 not in [f for f, _, _ in found] and 19 not in [f for f, _, _ in found]  # cast, ternary


def test_bound_over_a_condition_on_two_lines_ignores_shifts_and_arrows():
    assert tricky("bound") == [
        (7, 7, ("\tif (f->shift << 2 >= n ||",)),
        (8, 8, ("\t\t(f->len >> 1) <= f->max)",)),
        (13, 13, ("\tfor (i = 0; i <= n; i++)",)),
    ]


def test_negate_if_and_drop_if_on_a_condition_over_two_lines():
    assert tricky("negate-if")[0] == (7, 8, ("\tif (!(f->shift << 2 > n ||", "\t\t(f->len >> 1) < f->max))"))
    assert tricky("drop-if")[0] == (7, 8, ("\tif (0)",))


def test_drop_early_return_with_an_else_or_as_a_body_is_left_alone():
    # `if (n) goto out; else n++;` keeps its if; lines 7-9 are a real early return
    assert tricky("drop-early-return") == [(7, 9, ())]


def test_a_function_on_one_line():
    text = "static inline void put_all(struct foo *f) { if (f) put(f); }\n"
    found = mutants_of("include/x.h", text)
    assert [(m.operator, m.replacement) for m in found] == [
        ("drop-call", ("static inline void put_all(struct foo *f) { if (f) { } }",)),
        ("negate-if", ("static inline void put_all(struct foo *f) { if (!(f)) put(f); }",)),
        ("drop-if", ("static inline void put_all(struct foo *f) { if (0) put(f); }",)),
    ]


def test_every_mutation_keeps_brackets_balanced():
    for path in FILES:
        text = source(path)
        for m in mutants_of(path, text):
            code = re.sub(r"'.'|\"(?:\\.|[^\"\\])*\"", "", m.apply(text))
            for opener, closer in ("()", "[]", "{}"):
                assert code.count(opener) - code.count(closer) == text.count(opener) - text.count(closer), m.id


# --- mutants and their patches


def test_mutants_are_in_source_order_with_stable_unique_ids():
    text = source(VFIO)
    first = mutants_of(VFIO, text)
    assert first == mutants_of(VFIO, text)
    assert len({m.id for m in first}) == len(first)
    assert [m.first_line for m in first] == sorted(m.first_line for m in first)
    assert first[0].id == "vfio_pci_dmabuf:vfio_pci_dma_buf_attach:30:negate-if:1"
    assert {m.operator for m in first} == set(OPERATORS)


def test_counts_per_fixture_file():
    assert len(mutants_of(VFIO, source(VFIO))) == 164
    assert len(mutants_of(DMABUF, source(DMABUF))) == 65
    assert len(mutants_of(P2PDMA, source(P2PDMA))) == 358
    assert len(mutants_of(VFIO, source(VFIO), ["vfio_pci_dma_buf_move"])) == 23


def test_an_unknown_function_or_operator_fails_with_the_menu():
    with pytest.raises(ConfigError, match=r"no function nope .*vfio_pci_dma_buf_move"):
        mutants_of(VFIO, source(VFIO), ["nope"])
    with pytest.raises(ConfigError, match=r"unknown mutation operator typo; known: drop-call"):
        mutants_of(VFIO, source(VFIO), None, ["typo"])


GOLDEN_IDS = [
    "vfio_pci_dmabuf:vfio_pci_dma_buf_move:344:drop-early-return:1",
    "vfio_pci_dmabuf:vfio_pci_dma_buf_move:347:negate-if:1",
    "vfio_pci_dmabuf:vfio_pci_dma_buf_move:349:drop-if:1",
    "vfio_pci_dmabuf:vfio_pci_dma_buf_move:350:swap-sibling:1",
    "vfio_pci_dmabuf:vfio_pci_dma_buf_move:351:drop-call:1",
    "vfio_pci_dmabuf:vfio_pci_dma_buf_move:352:drop-call:1",
]


def golden_name(mutant_id: str) -> str:
    return "-".join(mutant_id.split(":")[1:]) + ".patch"


@pytest.mark.parametrize("mutant_id", GOLDEN_IDS)
def test_golden_patch(mutant_id):
    by_id = {m.id: m for m in mutants_of(VFIO, source(VFIO), ["vfio_pci_dma_buf_move"])}
    path = GOLDEN / golden_name(mutant_id)
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(by_id[mutant_id].patch)
    assert path.exists(), f"no golden file {path}; run with TESTBED_REGEN_GOLDEN=1"
    assert by_id[mutant_id].patch == path.read_text(), f"the patch of {mutant_id} differs from {path}"


def test_every_golden_file_has_a_mutant():
    assert sorted(p.name for p in GOLDEN.glob("*.patch")) == sorted(golden_name(i) for i in GOLDEN_IDS)


@pytest.fixture(scope="module")
def kernel_repo(tmp_path_factory):
    """A git repository holding the fixture files at their kernel paths, one commit."""
    repo = tmp_path_factory.mktemp("kernel")
    for path in FILES:
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / path, repo / path)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def test_every_mutant_of_the_fixture_files_applies(kernel_repo, tmp_path):
    for path in FILES:
        for m in mutants_of(path, source(path)):
            patch = tmp_path / "m.patch"
            patch.write_text(m.patch)
            git(kernel_repo, "apply", "--check", str(patch))  # raises, naming the patch, if it does not


@pytest.mark.parametrize("mutant_id", GOLDEN_IDS)
def test_git_am_takes_the_patch_and_format_patch_gives_it_back(kernel_repo, tmp_path, mutant_id):
    text = source(VFIO)
    [m] = [m for m in mutants_of(VFIO, text, ["vfio_pci_dma_buf_move"]) if m.id == mutant_id]
    base = git(kernel_repo, "rev-parse", "HEAD").strip()
    (tmp_path / "m.patch").write_text(m.patch)
    try:
        git(kernel_repo, "am", "-q", str(tmp_path / "m.patch"))
        assert (kernel_repo / VFIO).read_text() == m.apply(text)
        again = git(kernel_repo, "format-patch", "-1", "--stdout", "--full-index")
    finally:
        git(kernel_repo, "reset", "-q", "--hard", base)
    # the same mail but for the commit id, the diffstat we leave out and git's version
    again = re.sub(r"\AFrom [0-9a-f]{40} ", "From " + "0" * 40 + " ", again)
    again = re.sub(r"\n---\n.*?\n\ndiff --git", "\n---\ndiff --git", again, flags=re.S)
    again = re.sub(r"\n-- \n.*\n\n\Z", "\n-- \n2.0\n\n", again)
    assert again == m.patch


def test_apply_matches_the_patch_for_multi_line_edits():
    text = source(VFIO)
    m = next(m for m in mutants_of(VFIO, text, ["vfio_pci_dma_buf_move"]) if m.first_line == 352)
    after = m.apply(text).split("\n")
    assert after[350:352] == [
        "\t\t\tdma_buf_invalidate_mappings(priv->dmabuf);",
        "\t\t\tdma_resv_unlock(priv->dmabuf->resv);",
    ]
    assert (
        "@@ -349,9 +349,6 @@ void vfio_pci_dma_buf_move(struct vfio_pci_core_device *vdev, bool revoked)\n" in m.patch
    )


# --- sample and shard


def all_mutants() -> tuple[Mutant, ...]:
    return tuple(m for path in FILES for m in mutants_of(path, source(path)))


def test_sample_is_deterministic_for_a_seed_and_keeps_the_order():
    mutants = all_mutants()
    picked = sample(mutants, 40, seed=7)
    assert len(picked) == 40
    assert picked == sample(mutants, 40, seed=7) == sample(tuple(reversed(mutants)), 40, seed=7)[::-1]
    assert picked != sample(mutants, 40, seed=8)
    assert list(picked) == [m for m in mutants if m in picked]


def test_sample_spreads_over_functions_and_operators():
    mutants = all_mutants()
    groups = {(m.path, m.function, m.operator) for m in mutants}
    picked = sample(mutants, len(groups), seed=1)
    assert {(m.path, m.function, m.operator) for m in picked} == groups


def test_sample_edges():
    mutants = all_mutants()
    assert sample(mutants, len(mutants) + 5, seed=1) == mutants
    assert sample(mutants, 0, seed=1) == ()
    with pytest.raises(ConfigError):
        sample(mutants, -1, seed=1)


def test_shards_partition_the_set_round_robin_by_id():
    mutants = all_mutants()
    shards = [shard(mutants, k, 4) for k in range(1, 5)]
    ids = [m.id for s in shards for m in s]
    assert sorted(ids) == sorted(m.id for m in mutants) and len(set(ids)) == len(ids)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards[0][:2] == tuple(sorted(mutants, key=lambda m: m.id)[0:5:4])
    assert shard(tuple(reversed(mutants)), 3, 4) == shards[2]
    assert shard(mutants, 1, 1) == tuple(sorted(mutants, key=lambda m: m.id))


@pytest.mark.parametrize(("k", "n"), [(0, 3), (4, 3), (1, 0)])
def test_shard_out_of_range_is_a_configuration_error(k, n):
    with pytest.raises(ConfigError, match=r"between 1 and n"):
        shard(all_mutants(), k, n)
