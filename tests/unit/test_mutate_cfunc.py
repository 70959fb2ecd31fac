"""Finding kernel C function definitions: recorded Linux 7.2.13 files, and text made to fool a brace counter.

The fixtures under tests/fixtures/mutate/ are whole files of Debian's linux-source-7.2 (7.2.13-1)
at their kernel paths.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.mutate.cfunc import CFunction, code_mask, find_function, find_functions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mutate"
VFIO = "drivers/vfio/pci/vfio_pci_dmabuf.c"
DMABUF = "drivers/dma-buf/dma-buf-mapping.c"
P2PDMA = "drivers/pci/p2pdma.c"


def source(path: str) -> str:
    return (FIXTURES / path).read_text()


@pytest.mark.parametrize(
    ("path", "name", "lines"),
    [
        (VFIO, "vfio_pci_dma_buf_move", (336, 337, 378)),
        (VFIO, "vfio_pci_dma_buf_map", (50, 53, 70)),  # return type on the line above
        (VFIO, "vfio_pci_core_feature_dma_buf", (221, 224, 334)),
        (DMABUF, "dma_buf_phys_vec_to_sgt", (100, 105, 221)),
        (DMABUF, "dma_buf_free_sgt", (233, 235, 258)),
        (P2PDMA, "calc_map_type_and_dist", (700, 703, 793)),
        (P2PDMA, "pci_p2pdma_map_type", (1102, 1104, 1131)),
        (P2PDMA, "cpu_supports_p2pdma", (522, 523, 533)),  # #ifdef CONFIG_X86 inside
        (P2PDMA, "__host_bridge_whitelist", (606, 608, 637)),
    ],
)
def test_real_functions_have_their_lines(path, name, lines):
    assert find_function(source(path), name) == CFunction(name, *lines)


def test_every_function_of_a_file_in_source_order():
    names = [f.name for f in find_functions(source(VFIO))]
    assert names == [
        "vfio_pci_dma_buf_attach",
        "vfio_pci_dma_buf_done",
        "vfio_pci_dma_buf_map",
        "vfio_pci_dma_buf_unmap",
        "vfio_pci_dma_buf_release",
        "vfio_pci_dma_buf_iommufd_map",
        "vfio_pci_core_fill_phys_vec",
        "vfio_pci_core_get_dmabuf_phys",
        "validate_dmabuf_input",
        "vfio_pci_core_feature_dma_buf",
        "vfio_pci_dma_buf_move",
        "vfio_pci_dma_buf_cleanup",
    ]


def test_p2pdma_c_has_every_definition_and_no_initializer():
    text = source(P2PDMA)
    found = find_functions(text)
    lines = text.split("\n")
    assert len(found) == lines.count("{") == 34
    # `static const struct ... pci_p2pdma_whitelist[] = {`, struct definitions and attribute groups are no functions
    assert find_function(text, "pci_p2pdma_whitelist") is None
    assert all(f.name not in ("p2pmem_group", "p2pmem_alloc_attr", "pci_p2pdma") for f in found)
    for f in found:
        assert lines[f.body_start - 1] == "{" and lines[f.end_line - 1] == "}", f


def test_body_lines_run_from_brace_to_brace():
    text = source(VFIO)
    body = find_function(text, "vfio_pci_dma_buf_done").body_lines(text)
    assert body == (
        "{",
        "\tstruct vfio_pci_dma_buf *priv =",
        "\t\tcontainer_of(kref, struct vfio_pci_dma_buf, kref);",
        "",
        "\tcomplete(&priv->comp);",
        "}",
    )


TRICKY = r"""// a { in a line comment
/* a { in a block comment
   } and more */
#define OPEN {
#define MACRO_BODY(x) \
	do {          \
		x;    \
	} while (0)

static const char *s = "}{";

static int __printf(2, 3) braces_in_literals(int a, const char *fmt, ...)
{
	char c = '{';
	char q = '\'';
	const char *t = "\"{ /* not a comment */";
#if 0
	if (a) {
#endif
	return c + q + t[0]; /* } */
}

static inline void one_liner(void) { }

struct not_a_function {
	int (*op)(int);
};

static void locked(struct foo *f)
	__releases(&f->lock)
{
	spin_unlock(&f->lock);
}

static const struct ops table = {
	.op = one_liner,
};
"""


def test_braces_in_comments_strings_chars_and_preprocessor_lines_are_not_counted():
    assert find_functions(TRICKY) == (
        CFunction("braces_in_literals", 12, 13, 21),
        CFunction("one_liner", 23, 23, 23),
        CFunction("locked", 29, 31, 33),
    )


def test_code_mask_keeps_offsets_and_blanks_what_is_not_code():
    mask = code_mask(TRICKY)
    assert len(mask) == len(TRICKY)
    assert mask.count("\n") == TRICKY.count("\n")
    assert "comment" not in mask and "#define" not in mask and "#if" not in mask
    assert "char c = ' ';" in mask  # the quotes stay: the literal is still one token
    assert re.search(r'const char \*t = " +";', mask)
    assert "if (a)" not in mask  # dead code under `#if 0`


def test_a_missing_function_is_none():
    assert find_function(source(VFIO), "no_such_function") is None
