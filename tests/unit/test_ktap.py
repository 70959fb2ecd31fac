"""The KTAP parser on recorded kernel logs (tests/logs/ktap, see its README) and short edge cases."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from testbed.logs.ktap import KtapCase, KtapReport, Status, parse_ktap, strip_prefix

KTAP = Path(__file__).resolve().parent.parent / "logs" / "ktap"
FIXTURES = sorted(p.name for p in KTAP.iterdir() if p.name != "README.md")
CRASHED = "no result line (crashed?)"


def parse(name: str) -> list[KtapReport]:
    # keepends: the lines as a file iterator gives them
    return parse_ktap((KTAP / name).read_text().splitlines(keepends=True))


def only(name: str) -> KtapReport:
    reports = parse(name)
    assert len(reports) == 1
    return reports[0]


def case(report: KtapReport, *path: str) -> KtapCase:
    return dict(report.walk())[path]


def problems(report: KtapReport) -> list[str]:
    return list(report.problems) + [p for _, c in report.walk() for p in c.problems]


def counts(report: KtapReport) -> dict[str, int]:
    return {status.name: n for status, n in report.counts().items() if n}


def text(*lines: str) -> list[str]:
    return [line + "\n" for line in lines]


def test_every_fixture_is_described():
    readme = (KTAP / "README.md").read_text()
    assert FIXTURES and all(f"`{name}`" in readme for name in FIXTURES)


@pytest.mark.parametrize("name", FIXTURES)
def test_a_case_log_is_the_span_of_lines_it_covers(name):
    lines = [strip_prefix(line) for line in (KTAP / name).read_text().splitlines()]
    for report in parse(name):
        assert lines[report.first_line - 1].strip() == report.version
        for _, c in report.walk():
            assert list(c.log) == lines[c.first_line - 1 : c.last_line]
            assert report.first_line < c.first_line <= c.last_line <= report.last_line


# --- prefixes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[   12.345678] KTAP version 1", "KTAP version 1"),
        ("[   12.345678]     ok 1 p2pdma_alloc\n", "    ok 1 p2pdma_alloc"),
        ("[    0.060000][    T1] \t# Subtest: kunit-resource-test", "\t# Subtest: kunit-resource-test"),
        ("[    1.000000][    C0] ok 1 - x", "ok 1 - x"),
        ("[  T123] ok 1 - x", "ok 1 - x"),  # caller id without printk.time
        ("<6>[   12.345678] 1..3", "1..3"),  # dmesg -r / /dev/kmsg style level
        ("<14>ok 2 y", "ok 2 y"),
        ("[    0.060000]", ""),
        ("[  100.000001]  foo bar \t#\r\n", " foo bar \t#"),  # the message's own indentation stays
        (" [<6016f7db>] ? kunit_try_run_case+0xab/0xf0", " [<6016f7db>] ? kunit_try_run_case+0xab/0xf0"),
        ("    ok 1 no prefix", "    ok 1 no prefix"),
    ],
)
def test_strip_prefix(line, message):
    assert strip_prefix(line) == message


def test_timestamps_are_stripped_from_logs_and_names():
    report = only("test_kernel_panic_interrupt.log")
    assert report.version == "TAP version 14"
    assert case(report, "kunit-resource-test", "kunit_resource_test_init_resources").log == (
        "\tok 1 - kunit_resource_test_init_resources",
    )
    assert not any("0.060000" in line for _, c in report.walk() for line in c.log)


def test_caller_id_prefix():
    report = only("test_multiple_prefixes.log")
    names = ["kunit-resource-test", "kunit-try-catch-test", "string-stream-test"]
    assert [c.name for c in report.cases] == names
    assert counts(report) == {"PASS": 10}
    assert problems(report) == []
    assert not any("T1]" in line for _, c in report.walk() for line in c.log)


def test_crlf_line_ends():
    [report] = parse_ktap(["KTAP version 1\r\n", "1..1\r\n", "ok 1 serial\r\n"])
    assert report.cases[0].name == "serial" and report.cases[0].log == ("ok 1 serial",)


# --- real KUnit logs ---------------------------------------------------------------------------


def test_all_passed_nested():
    report = only("test_is_test_passed-all_passed_nested.log")
    assert (report.version, report.plan, report.problems) == ("TAP version 14", 2, ())
    assert (report.first_line, report.last_line) == (1, 34)
    assert [path for path, _ in report.walk()] == [  # parents before their subtests
        ("sysctl_test",),
        ("sysctl_test", "sysctl_test_dointvec_null_tbl_data"),
        ("sysctl_test", "example"),
        ("sysctl_test", "example", "example_simple_test"),
        ("sysctl_test", "example", "example_mock_test"),
        ("sysctl_test", "sysctl_test_dointvec_table_len_is_zero"),
        ("sysctl_test", "sysctl_test_dointvec_table_read_but_position_set"),
        ("example",),
        ("example", "example_simple_test"),
        ("example", "example_mock_test"),
    ]
    assert [c.number for c in case(report, "sysctl_test").subtests] == [1, 2, 3, 4]
    assert counts(report) == {"PASS": 7}  # leaves only
    assert problems(report) == []
    # a non-KTAP line printed inside a suite is part of the case that runs
    assert "\tinit_suite" in case(report, "sysctl_test", "example", "example_simple_test").log


def test_failing_case_log_has_its_own_kernel_messages_only():
    report = only("test_is_test_passed-failure.log")
    assert report.plan is None and report.problems == ()
    failing = case(report, "example", "example_simple_test")
    assert (failing.number, failing.status, failing.directive) == (1, Status.FAIL, "")
    assert (failing.first_line, failing.last_line) == (24, 31)
    assert failing.diagnostics == (
        "example_simple_test: initializing",
        "example_simple_test: EXPECTATION FAILED at lib/kunit/example-test.c:30",
        "example_simple_test: example_simple_test failed",
    )
    assert failing.log[0] == "init_suite"
    assert "\tExpected 1 + 1 == 3, but" in failing.log and "\t\t1 + 1 == 2" in failing.log
    assert failing.log[-1] == "\tnot ok 1 - example_simple_test"
    assert not any("example_mock_test" in line for line in failing.log)
    following = case(report, "example", "example_mock_test")
    assert following.status == Status.PASS and not any("Expected" in line for line in following.log)
    suite = case(report, "example")
    assert suite.status == Status.FAIL and suite.number == 2
    assert "kunit example: one or more tests failed" in suite.log
    assert suite.log[-1] == "not ok 2 - example"
    assert counts(report) == {"PASS": 9, "FAIL": 1}


def test_crash_caught_by_kunit_keeps_the_stack_trace_in_the_case_log():
    report = only("test_is_test_passed-crash.log")
    assert (report.first_line, report.last_line, report.plan) == (3, 69, 2)
    crashed = case(report, "example", "example_simple_test")
    assert crashed.status == Status.FAIL  # a result line came: KUnit caught the fault
    assert "example_simple_test: kunit test case crashed!" in crashed.diagnostics
    assert "Call Trace:" in crashed.log
    assert " [<6016f46e>] ? kunit_run_tests+0xce/0x260" in crashed.log
    assert "Call Trace:" not in case(report, "example", "example_mock_test").log
    # the kernel lines around the document are nobody's
    assert not any(
        "printk: console" in line or "List of all partitions" in line for _, c in report.walk() for line in c.log
    )
    assert problems(report) == []


def test_kernel_panic_before_the_results():
    report = only("test_kernel_panic_interrupt.log")
    assert report.plan == 3
    assert report.problems == ("plan said 3 tests, 2 ran",)
    assert [(c.number, c.name, c.status) for c in report.cases] == [
        (1, "kunit-resource-test", Status.PASS),
        (2, "kunit-try-catch-test", Status.PASS),
        (0, "string-stream-test", Status.ERROR),  # named by its "# Subtest:" line
    ]
    suite = report.cases[2]
    assert suite.problems == (CRASHED, "plan said 3 tests, 1 ran")
    done, running = suite.subtests
    assert (done.name, done.status) == ("string_stream_test_empty_on_creation", Status.PASS)
    assert (running.number, running.name, running.status) == (0, "", Status.ERROR)
    assert running.problems == (CRASHED,)
    assert running.log[0] == ("\tKernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(98,0)")
    assert running.log[-1] == " 6005fcec 601bc260 705c0000 3000000010"
    assert (running.first_line, running.last_line) == (21, 26) == (running.first_line, report.last_line)
    assert counts(report) == {"PASS": 8, "ERROR": 1}


def test_interleaved_kernel_messages_belong_to_the_running_case():
    report = only("test_interrupted_tap_output.log")
    assert problems(report) == []
    assert counts(report) == {"PASS": 10}
    suite = "kunit-resource-test"
    running = case(report, suite, "kunit_resource_test_cleanup_resources")
    assert running.log[0] == "kAFS: Red Hat AFS client v0.1 registering."
    assert "BTRFS: selftest: running btrfs free space cache tests" in running.log
    assert running.diagnostics == ()
    assert case(report, suite, "kunit_resource_test_destroy_resource").log == (
        "\tok 3 - kunit_resource_test_destroy_resource",
    )
    assert "kAFS: Red Hat AFS client v0.1 registering." in case(report, suite).log


def test_pound_sign_inside_a_kernel_message_is_not_a_diagnostic():
    report = only("test_pound_sign.log")
    assert problems(report) == [] and counts(report) == {"PASS": 10}
    assert all(c.diagnostics == () for _, c in report.walk())
    assert " foo bar \t#" in case(report, "kunit-resource-test", "kunit_resource_test_cleanup_resources").log
    assert case(report, "kunit-try-catch-test").log[0] == " foo bar \t# non-kunit output"


def test_skip_directive():
    report = only("test_skip_tests.log")
    skipped = case(report, "example", "example_skip_test")
    assert (skipped.status, skipped.directive) == (Status.SKIP, "SKIP this test should be skipped")
    assert skipped.diagnostics == ("example_skip_test: initializing",)
    assert case(report, "example").status == Status.PASS  # a parent's status is its own result line
    assert counts(report) == {"PASS": 4, "SKIP": 1}


def test_skip_all_tests():
    report = only("test_skip_all_tests.log")
    assert [(c.name, c.status, c.directive) for c in report.cases] == [
        ("string-stream-test", Status.SKIP, "SKIP"),
        ("example", Status.SKIP, "SKIP"),
    ]
    leaf = case(report, "string-stream-test", "string_stream_test_get_string")
    assert leaf.directive == "SKIP all tests skipped"
    assert counts(report) == {"SKIP": 5}


def test_ktap_v1_nesting_and_parent_results():
    report = only("test_is_test_passed-failure-nested.log")
    assert (report.version, report.plan) == ("KTAP version 1", 2)
    assert [(c.number, c.name, c.status) for c in report.cases] == [
        (1, "subtest 1", Status.FAIL),
        (2, "subtest 2", Status.FAIL),
    ]
    assert [(c.name, c.status) for c in report.cases[0].subtests] == [("test 1", Status.PASS)]
    assert [(c.name, c.status) for c in report.cases[1].subtests] == [("subsubtest 1", Status.FAIL)]
    assert problems(report) == []


def test_two_space_indent_and_suite_header_diagnostics():
    report = only("test_parse_attributes.log")  # no newline at the end of the file
    suite = case(report, "suite")
    assert (suite.status, suite.first_line, suite.last_line) == (Status.PASS, 3, 9)
    assert suite.log[:2] == ("  KTAP version 1", "  # Subtest: suite")
    # "# module:" before the plan is part of the suite's header, not of its first case
    assert "  # module: example" in suite.log
    assert case(report, "suite", "test").diagnostics == ("test.speed: slow",)
    assert problems(report) == []


def test_tap13_dash_is_not_part_of_the_name():
    report = only("test_strip_hyphen.log")
    assert [path for path, _ in report.walk()] == [
        ("sysctl_test",),
        ("sysctl_test", "sysctl_test_dointvec_null_tbl_data"),  # "ok 1 - sysctl_test_dointvec_null_tbl_data"
        ("example",),  # "ok 2 example"
        ("example", "example_simple_test"),
    ]


def test_missing_plan_is_allowed():
    report = only("test_is_test_passed-missing_plan.log")
    assert report.plan is None
    assert len(case(report, "sysctl_test").subtests) == 8
    assert problems(report) == []


# --- real kselftest output ---------------------------------------------------------------------


def test_kselftest_runner_nested_output_is_diagnostics():
    report = only("test_is_test_passed-kselftest.log")
    assert (report.version, report.plan, report.problems) == ("TAP version 13", 2, ())
    first, second = report.cases
    assert first.name == "selftests: membarrier: membarrier_test_single_thread"
    assert second.name == "selftests: membarrier: membarrier_test_multi_thread"
    assert first.subtests == () and first.status == Status.PASS
    assert first.diagnostics == (
        "selftests: membarrier: membarrier_test_single_thread",
        "TAP version 13",
        "1..2",
        "ok 1 sys_membarrier available",
        "ok 2 sys membarrier invalid command test: command = -1, flags = 0, errno = 22. Failed as expected",
    )


def test_kselftest_harness():
    report = only("harness-selftest.expected")
    assert (report.version, report.plan, report.problems) == ("TAP version 13", 9, ())
    assert [(c.number, c.name, c.status) for c in report.cases][:3] == [
        (1, "global.standalone_pass", Status.PASS),
        (2, "global.standalone_fail", Status.FAIL),
        (3, "global.signal_pass", Status.PASS),
    ]
    assert counts(report) == {"PASS": 4, "FAIL": 5}
    failing = report.cases[1]
    assert failing.diagnostics == (
        "RUN           global.standalone_fail ...",
        "harness-selftest.c:27:standalone_fail:before",
        "harness-selftest.c:29:standalone_fail:Expected 0 (0) == 1 (1)",
        "harness-selftest.c:30:standalone_fail:Expected 0 (0) == 1 (1)",
        "standalone_fail: Test terminated by assertion",
        "FAIL  global.standalone_fail",
    )
    assert report.cases[6].name == "fixture.timeout"
    assert "timeout: Test terminated by timeout" in report.cases[6].diagnostics
    # "# FAILED: 4 / 9" and "# Totals:" after the last result are diagnostics of nothing, not problems
    assert report.last_line == 62 == report.cases[-1].last_line


# --- short synthetic logs for what the recorded ones lack ---------------------------------------

MODULE_TWICE = text(
    "[   10.000001] p2pdma_test: loading out-of-tree module taints kernel.",
    "[   10.100000] KTAP version 1",
    "[   10.100001] 1..1",
    "[   10.100002]     KTAP version 1",
    "[   10.100003]     # Subtest: p2pdma",
    "[   10.100004]     # module: p2pdma_test",
    "[   10.100005]     1..3",
    "[   10.100006] pci 0000:01:00.0: enabling device (0000 -> 0002)",
    "[   10.100007]     ok 1 p2pdma_alloc",
    "[   10.200000] nvme nvme0: failed to map p2p memory",
    "[   10.200001]     # p2pdma_map: EXPECTATION FAILED at drivers/pci/p2pdma_test.c:42",
    "[   10.200002]     not ok 2 p2pdma_map",
    "[   10.300000] BUG: kernel NULL pointer dereference, address: 0000000000000010",
    "[   10.300001] Oops: 0000 [#1] SMP",
    "[   20.000000] p2pdma_test: loading",
    "[   20.100000] KTAP version 1",
    "[   20.100001] 1..1",
    "[   20.100002]     KTAP version 1",
    "[   20.100003]     # Subtest: p2pdma",
    "[   20.100005]     1..2",
    "[   20.100007]     ok 1 p2pdma_alloc",
    "[   20.100008]     ok 2 p2pdma_map # skip no IOMMU",
    "[   20.100009] # p2pdma: pass:1 fail:0 skip:1 total:2",
    "[   20.100010] # Totals: pass:1 fail:0 skip:1 total:2",
    "[   20.100011] ok 1 p2pdma",
    "[   20.100012] random: crng init done",
)


def test_module_loaded_twice_first_run_crashed():
    crashed, rerun = parse_ktap(MODULE_TWICE)
    assert (crashed.first_line, crashed.last_line, rerun.first_line, rerun.last_line) == (2, 15, 16, 25)
    assert crashed.problems == ("plan said 1 test, 0 ran",)
    [suite] = crashed.cases
    assert (suite.name, suite.status) == ("p2pdma", Status.ERROR)
    assert suite.problems == (CRASHED, "plan said 3 tests, 2 ran")
    alloc, map_, dead = suite.subtests
    assert alloc.diagnostics == ()  # "# module:" is the suite header's
    assert alloc.log == ("pci 0000:01:00.0: enabling device (0000 -> 0002)", "    ok 1 p2pdma_alloc")
    assert map_.status == Status.FAIL
    assert map_.log == (
        "nvme nvme0: failed to map p2p memory",
        "    # p2pdma_map: EXPECTATION FAILED at drivers/pci/p2pdma_test.c:42",
        "    not ok 2 p2pdma_map",
    )
    assert (dead.number, dead.status, dead.problems) == (0, Status.ERROR, (CRASHED,))
    assert dead.log[:2] == (
        "BUG: kernel NULL pointer dereference, address: 0000000000000010",
        "Oops: 0000 [#1] SMP",
    )
    assert counts(crashed) == {"PASS": 1, "FAIL": 1, "ERROR": 1}

    assert rerun.problems == () and counts(rerun) == {"PASS": 1, "SKIP": 1}
    [suite] = rerun.cases
    assert suite.diagnostics == (  # KUnit's per-suite and overall counts, before the suite's result
        "p2pdma: pass:1 fail:0 skip:1 total:2",
        "Totals: pass:1 fail:0 skip:1 total:2",
    )
    assert (suite.subtests[1].status, suite.subtests[1].directive) == (Status.SKIP, "SKIP no IOMMU")


def test_directives():
    [report] = parse_ktap(
        text(
            "TAP version 13",
            "1..6",
            "ok 1 - works # TODO not implemented",
            "not ok 2 broken # todo known bug",
            "ok 3 expected_failure # XFAIL needs hw",
            "not ok 4 slow # TIMEOUT 45 seconds",
            "ok 5 check return code # rcode=0",
            "not ok 6 - no_device #SKIP",
        )
    )
    assert [(c.name, c.status, c.directive) for c in report.cases] == [
        ("works", Status.PASS, "TODO not implemented"),
        ("broken", Status.FAIL, "TODO known bug"),
        ("expected_failure", Status.PASS, "XFAIL needs hw"),
        ("slow", Status.FAIL, "TIMEOUT 45 seconds"),
        ("check return code", Status.PASS, "rcode=0"),
        ("no_device", Status.SKIP, "SKIP"),
    ]


def test_more_results_than_planned():
    [report] = parse_ktap(text("KTAP version 1", "1..2", "ok 1 a", "ok 2 b", "ok 3 c"))
    assert [c.name for c in report.cases] == ["a", "b", "c"]
    assert report.problems == ("plan said 2 tests, 3 ran",)


def test_output_stops_before_the_plan_is_done():
    [report] = parse_ktap(text("KTAP version 1", "1..3", "ok 1 a", "ok 2 b"))
    *done, missing = report.cases
    assert [c.status for c in done] == [Status.PASS, Status.PASS]
    assert (missing.number, missing.name, missing.status, missing.log) == (0, "", Status.ERROR, ())
    assert report.problems == ("plan said 3 tests, 2 ran",)


def test_unexpected_test_number():
    [report] = parse_ktap(text("KTAP version 1", "1..3", "ok 1 a", "ok 4 b", "ok 3 c"))
    assert [c.problems for c in report.cases] == [(), ("expected test 2, got 4",), ()]
    assert report.problems == ()


def test_missing_parent_result_before_the_next_suite():
    [report] = parse_ktap(
        text(
            "KTAP version 1",
            "1..2",
            "    KTAP version 1",
            "    # Subtest: s1",
            "    1..1",
            "    ok 1 a",
            "    KTAP version 1",
            "    # Subtest: s2",
            "    1..1",
            "    ok 1 b",
            "ok 2 s2",
        )
    )
    s1, s2 = report.cases
    assert (s1.number, s1.name, s1.status, s1.problems) == (0, "s1", Status.ERROR, (CRASHED,))
    assert [c.name for c in s1.subtests] == ["a"]
    assert (s2.number, s2.name, s2.status, s2.problems) == (2, "s2", Status.PASS, ())
    assert report.problems == ("plan said 2 tests, 1 ran",)


def test_tap14_subtest_line_at_the_parent_level():
    [report] = parse_ktap(
        text(
            "TAP version 14",
            "1..1",
            "# Subtest: foo",
            "    1..1",
            "    ok 1 - bar",
            "ok 1 - foo",
        )
    )
    assert [path for path, _ in report.walk()] == [("foo",), ("foo", "bar")]
    assert problems(report) == []


def test_subtest_name_disagreeing_with_the_result_line():
    [report] = parse_ktap(
        text("KTAP version 1", "1..1", "  KTAP version 1", "  # Subtest: foo", "  1..1", "  ok 1 t", "ok 1 bar")
    )
    assert report.cases[0].problems == ("subtest header says 'foo', result line 'bar'",)


def test_unexpected_version_and_empty_document():
    [report] = parse_ktap(text("KTAP version 2", "1..1", "ok 1 a"))
    assert report.problems == ("unexpected version line 'KTAP version 2'",)
    [empty] = parse_ktap(text("TAP version 14", "hello"))
    assert (empty.cases, empty.problems) == ((), ("no test results",))
    [skipped] = parse_ktap(text("TAP version 13", "1..0 # SKIP no hardware"))
    assert (skipped.plan, skipped.cases, skipped.problems) == (0, (), ())


def test_no_ktap_at_all():
    assert parse_ktap([]) == []
    assert parse_ktap(text("[    0.000000] Linux version 6.12.0", "ok 1 not in a document", "1..3")) == []


def test_line_numbers_count_from_first_line():
    [report] = parse_ktap(text("KTAP version 1", "1..1", "noise", "ok 1 a"), first_line=100)
    assert (report.first_line, report.last_line) == (100, 103)
    assert (report.cases[0].first_line, report.cases[0].last_line) == (102, 103)


def test_results_are_frozen():
    report = only("test_skip_tests.log")
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.cases[0].name = "x"  # type: ignore[misc]
    assert set(report.counts()) == set(Status)


def test_never_raises_on_garbage():
    pieces = [
        "KTAP version 1",
        "TAP version 13",
        "1..",
        "1..2",
        "1..99999999999999999999",
        "ok",
        "ok 1",
        "not ok 0 x # SKIP",
        "ok 18446744073709551616 - big",
        "# Subtest:",
        "#",
        "# SKIP",
        "ok 1 - # todo",
        "[  1.0]",
        "<6>",
        "[ T1]",
        "\x00\xff",
        "\t",
        "KTAP version 1 trailing",
        "not ok -1 x",
    ]
    rng = random.Random(1234)
    for _ in range(300):
        lines = [" " * rng.choice([0, 0, 2, 4, 8]) + rng.choice(pieces) for _ in range(rng.randint(0, 40))]
        for report in parse_ktap(lines):
            for _, c in report.walk():
                assert c.first_line <= c.last_line
