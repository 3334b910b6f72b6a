"""Shared facts of the suite: the record schema, the endpoints config, the run-directory layout."""
