"""`python -m alignment`: the command line (`alignment.cli`), after a check that the packages it
imports are installed (else one line saying how to install them, instead of a traceback)."""
import sys
from importlib.util import find_spec

NEEDS = ("torch", "transformers", "yaml", "numpy", "safetensors", "tqdm", "vaderSentiment")
missing = [name for name in NEEDS if find_spec(name) is None]
if missing:
    sys.exit(f"error: {', '.join(missing)} not installed in {sys.executable}: `make setup` builds .venv with the "
             "pinned requirements (then use .venv/bin/python), or `pip install -e .` installs them here")

from .cli import main  # noqa: E402  (after the check above)

sys.exit(main())
