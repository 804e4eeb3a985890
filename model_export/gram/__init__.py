"""GRAM (arXiv 2504.01403): items and queries as shared text codes of normalised attribute values."""
