"""ballistix benchmarks: each module writes benchmarks/results/<name>.json (+ PNG) and prints a table."""
