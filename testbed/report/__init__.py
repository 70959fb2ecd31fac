"""A matrix run's cells merged: JUnit, Markdown summary, HTML table, KCIDB JSON (testbed merge)."""
