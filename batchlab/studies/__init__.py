"""Studies turn many runs into answers: one run from flat parameters (`scenario`), grids
from TOML (`sweep`, run by `executors` in a process pool or on Ray), and the main job
(`compare`, with `tables`, `plots` and `compare_report`). `summary` formats one run's
summary for the command line."""
