"""Running the steps as an experiment: the pipeline (`pipeline`, `datastages`, `runmodels`), each artifact built
once per config (`stagecache`, `rundir`), Level 1/2/3 (`experiments`, their frontiers in `frontiers`), committed results (`publish`), the
judges' independence check (`judge_check`) and recipe choice (`judge_select`). May import `steps`, `assets`, `study`, `base`, `config`, `presets`; only `cli` imports it."""
