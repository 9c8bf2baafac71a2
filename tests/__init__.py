"""wellpanel test suite."""
