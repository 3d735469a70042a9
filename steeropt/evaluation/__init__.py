"""Evaluation: the tiered objective stack (cheap metrics, gates, aggregation) and LLM judges."""
