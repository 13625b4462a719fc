"""Every number and sentence about the runs: metric definitions (`metrics`), statistics (`stats`, `gains`, `design`),
best-of-N (`frontier`, in words `frontier_report`) and the KL-optimal limit (`optimum`), the reward-hacking alarm
(`alarm`, in words `alarm_report`), tables and prose (`report`, `level3_report`, `results_page`, `console`, `notebook`),
plots (`plots`). On numbers and records: imports `base` and `presets` only."""
