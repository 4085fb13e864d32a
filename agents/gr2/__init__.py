"""GR2: a small generative reasoning reranker over semantic IDs.

Mid-training, rejection-sampled reasoning SFT, then DAPO with a conditional format
reward. The student is a ``transformers`` decoder-only model built from a config
(``pip install -e ".[lm]"``); it ranks GR2-protocol tasks
(``make_task(protocol="gr2")``, ``SlateRerankGR2-v0``). See docs/agents.md.
"""

from agents.gr2.agent import GR2
from agents.gr2.config import GR2Config

__all__ = ["GR2", "GR2Config"]
