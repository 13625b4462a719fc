"""Every number and sentence about the runs: metric definitions (`metrics`), statistics (`stats`, `design`),
best-of-N and the optimum (`frontier`), the reward-hacking alarm (`alarm`), tables and prose (`report`,
`level3_report`, `console`, `notebook`), plots (`plots`). On numbers and records: imports `base` and `presets` only."""
