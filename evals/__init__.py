"""Evaluation harness: score the production pipeline on real news questions."""
