"""Data quality: validation rules, coverage, the coverage report, monitoring and alerts."""
