"""`shakedown fuzz`: Hypothesis-driven workload and fault sequences against a real system,
recorded as a Jepsen-style operation history (`history`) and judged by checkers (`checkers`)
whose verdicts are aggregated into results.json (`results`)."""
