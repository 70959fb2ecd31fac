"""The case names a kselftest_harness program will report, from its `-l` listing.

The harness prints one table per fixture (kselftest_harness.h, test_harness_list_tests):

    # FIXTURE            VARIANT                   TEST
    global
    ----------------------------------------------------------------
    iommufd_ioas         no_domain                 ioas_auto_destroy
                         mock_domain               ioas_destroy

that is printf("%-20s %-25s %s"), the fixture name on its first row only and the variant and test
columns independent lists. It runs every test of a fixture under every variant, and names each
KTAP case `fixture.variant.test` (`fixture.test` when the fixture has no variants).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FIXTURE_WIDTH = 20
VARIANT_WIDTH = 25
_RULE = "-" * 20


@dataclass(frozen=True)
class Fixture:
    name: str
    variants: tuple[str, ...]
    tests: tuple[str, ...]

    def cases(self) -> tuple[str, ...]:
        if not self.variants:
            return tuple(f"{self.name}.{test}" for test in self.tests)
        return tuple(f"{self.name}.{variant}.{test}" for variant in self.variants for test in self.tests)


def _columns(line: str) -> tuple[str, str, str]:
    """(fixture, variant, test) of one row; a column may be empty."""
    fixture = line[:FIXTURE_WIDTH].strip()
    if fixture and len(line) > FIXTURE_WIDTH and line[FIXTURE_WIDTH] != " ":
        fixture = line.split(" ", 1)[0]  # a name longer than the column pushes the rest right
    rest = line[max(FIXTURE_WIDTH, len(fixture)) + 1 :]
    if rest[:1] not in ("", " "):
        variant = rest.split(" ", 1)[0]
        test = rest[max(VARIANT_WIDTH, len(variant)) + 1 :]
    else:
        variant, test = "", rest[VARIANT_WIDTH + 1 :]
    return fixture, variant, test.strip()


def parse_listing(lines: Iterable[str]) -> tuple[Fixture, ...]:
    fixtures: list[Fixture] = []
    name, variants, tests = "", list[str](), list[str]()

    def flush() -> None:
        if name and tests:
            fixtures.append(Fixture(name, tuple(variants), tuple(tests)))

    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip() or line.startswith("# FIXTURE"):
            continue
        if line.startswith(_RULE):
            flush()
            name, variants, tests = "", [], []
            continue
        fixture, variant, test = _columns(line)
        name = name or fixture
        if variant:
            variants.append(variant)
        if test:
            tests.append(test)
    flush()
    return tuple(fixtures)


def case_names(lines: Iterable[str]) -> tuple[str, ...]:
    """Every KTAP case name the program reports, in the order it runs them."""
    return tuple(case for fixture in parse_listing(lines) for case in fixture.cases())
