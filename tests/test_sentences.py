from __future__ import annotations

from index.sentences import split_sentences


def _split(text: str) -> list[str]:
    return [text[s.start : s.end] for s in split_sentences(text)]


def test_abbreviations_initials_and_decimals_do_not_split() -> None:
    text = (
        'Mr. Smith met Dr. Jones on Jan. 5. "It is over." Then U.S. troops left! '
        "J. K. Rowling sold 3.5 million."
    )
    assert _split(text) == [
        "Mr. Smith met Dr. Jones on Jan. 5.",
        '"It is over."',
        "Then U.S. troops left!",
        "J. K. Rowling sold 3.5 million.",
    ]


def test_line_breaks_end_sentences_and_spans_hold_no_outer_space() -> None:
    text = "  A heading\n\nBody one. Body two?  "
    assert _split(text) == ["A heading", "Body one.", "Body two?"]


def test_lowercase_after_period_is_not_a_boundary() -> None:
    assert _split("He used e.g. apples. next word.") == ["He used e.g. apples. next word."]
