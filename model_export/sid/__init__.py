"""CQ-SID + EG-GRPO (arXiv 2605.14434): items as hierarchical semantic cluster IDs from an
RQ-VAE whose level 1 is the category and whose codes are pulled toward queries, a generator
from query (and the user's recent SIDs) to SIDs trained in stages and aligned by EG-GRPO, and
the bundle files the ``sid`` channel serves from."""
