"""alignment: preference alignment (DPO and f-DPO variants) of small LMs on movie reviews,
with honest evaluation of what it costs in diversity and drift.

Import the pieces you need, e.g. `from alignment.losses import LOSSES`,
`from alignment.pipeline import Pipeline`, `from alignment.config import load_config`.
"""
__version__ = "0.1.0"
