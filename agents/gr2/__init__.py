"""GR2: a small generative reasoning reranker over semantic IDs.

Mid-training, rejection-sampled reasoning SFT, then DAPO with a conditional format
reward. The student is a ``transformers`` decoder-only model built from a config
(``pip install -e ".[lm]"``); see docs/agents.md.
"""

from agents.gr2.config import GR2Config

__all__ = ["GR2Config"]
