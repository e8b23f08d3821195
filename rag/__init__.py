"""Questions to cited answers: retrieve, compose, cite."""

from __future__ import annotations

from rag.answer import ABSTAIN_TEXT, Answerer
from rag.compose import AnswerComposer, ExtractiveComposer
from rag.config import AnswerSettings
from rag.records import Answer, Citation, Filters, Hit, Question
from rag.retrieve import DenseRetriever, Retriever

__all__ = [
    "ABSTAIN_TEXT",
    "Answer",
    "AnswerComposer",
    "AnswerSettings",
    "Answerer",
    "Citation",
    "DenseRetriever",
    "ExtractiveComposer",
    "Filters",
    "Hit",
    "Question",
    "Retriever",
]
