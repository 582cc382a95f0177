"""Prompt templates for the LLM label source and the report aggregator (files, versioned by the
sha256 of their rendered text). The templates arrive with the LLM labeling engine."""
