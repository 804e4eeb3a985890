"""The text side shared by every search channel: item and query texts, the tokenizer fit, and
the text channels' models (BM25 is built in ``index.bm25``; the dense two-tower here)."""
