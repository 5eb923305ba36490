"""LLM backends behind one Protocol: label scoring by log-probability and structured generation."""

from behavior_rag.llm.base import ChatMessage, LLMBackend

__all__ = ["ChatMessage", "LLMBackend"]
