"""What did a series change: two runs compared (testbed ab) and the first bad commit (testbed bisect)."""
