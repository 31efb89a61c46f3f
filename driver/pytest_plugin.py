"""pytest plugin entry point (`pytest11`). Fixtures for environments arrive with them."""
