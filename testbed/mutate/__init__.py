"""Mutation testing of kernel C code: find functions, plant one small real bug each, as patches."""
