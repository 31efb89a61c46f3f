"""Reports of suite runs: JSON summaries (`summary`); JUnit XML comes from pytest itself."""

from driver.reports.summary import Counts, build_summary

__all__ = ["Counts", "build_summary"]
