"""Kernel coverage of the series' code: the scope, gcovr runs over the guest's gcov counters, reports."""
