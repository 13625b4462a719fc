"""A sampler backend that draws in another process from the model's saved weights (`TAKES_REF`): what a vLLM
or server backend does, with the package's own decoder on the far side. Registered by tests as
`samplers.SAMPLERS["subprocess"] = "subprocess_sampler"`; each call's row count goes to CALLS."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from alignment.steps.samplers import Draws

TAKES_REF = True
CALLS: list[int] = []
ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import pickle, sys
import torch
from alignment.steps import decode
ref, args = pickle.load(open(sys.argv[1], "rb"))
draws = decode.draw(ref.load(torch.device("cpu")), *args)
pickle.dump(tuple(draws), open(sys.argv[2], "wb"))
"""


def draw(ref, tokenizer, prompts, n, cfg, stop_ids, keys, max_new_tokens=None):
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.pkl", Path(tmp) / "out.pkl"
        inp.write_bytes(pickle.dumps((ref, (tokenizer, prompts, n, cfg, stop_ids, keys, max_new_tokens))))
        res = subprocess.run([sys.executable, "-c", CHILD, str(inp), str(out)], cwd=ROOT, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-3000:])
        CALLS.append(len(keys))
        return Draws(*pickle.loads(out.read_bytes()))
