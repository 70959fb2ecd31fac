"""The testbed's pytest plugin: options, markers, VM fixtures, splat checks."""
