"""Every input format, and a clear error naming the file and the reason for every bad input: any record
is an article or an ArticleError, never another exception."""

from __future__ import annotations

import contextlib
import json
from datetime import date
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from index import ArticleError, load_paths, parse_record
from index.records import Article


def _load(*paths: Path) -> tuple[list[Article], list[ArticleError]]:
    items = list(load_paths(paths))
    return [i for i in items if isinstance(i, Article)], [i for i in items if isinstance(i, ArticleError)]


def test_txt_first_line_is_the_title_and_the_file_stem_the_id(tmp_path: Path) -> None:
    (tmp_path / "my story.txt").write_text("Bridge reopens\n\nThe bridge reopened on Monday.\n")
    (article,), errors = _load(tmp_path / "my story.txt")
    assert not errors
    assert (article.id, article.title, article.body) == (
        "my-story",
        "Bridge reopens",
        "The bridge reopened on Monday.",
    )


def test_markdown_front_matter_and_syntax(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_text(
        "---\ntitle: Port strike ends\nsource: Harbour Times\ndate: 2024-02-03\nurl: https://h.test/1\n---\n"
        "# Port strike ends\n\nDock workers **accepted** the [offer](https://h.test/o) on Friday.\n"
    )
    (article,), _ = _load(path)
    assert article.title == "Port strike ends"
    assert article.source == "Harbour Times"
    assert article.published_at == date(2024, 2, 3)
    assert article.body == "Dock workers accepted the offer on Friday."
    assert article.id.startswith("a")


def test_html_main_text_and_metadata_are_extracted(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    paragraphs = "".join(
        f"<p>Paragraph {i} says the council approved the new tram line after a long debate.</p>"
        for i in range(6)
    )
    path.write_text(
        "<html><head><title>Tram line approved | City Paper</title>"
        '<meta property="article:published_time" content="2024-05-02T10:00:00Z">'
        '<meta property="og:site_name" content="City Paper"></head><body>'
        "<nav><a href='/'>Home</a><a href='/news'>News</a></nav>"
        f"<article><h1>Tram line approved</h1>{paragraphs}</article>"
        "<footer>Copyright City Paper. All rights reserved.</footer></body></html>"
    )
    (article,), errors = _load(path)
    assert not errors
    assert "Tram line approved" in article.title
    assert article.published_at == date(2024, 5, 2)
    assert article.source == "City Paper"
    assert "Paragraph 5 says the council approved" in article.body
    assert "Home" not in article.body
    assert "<p>" not in article.body


def test_jsonl_and_json_records_keep_metadata(tmp_path: Path) -> None:
    record = {
        "id": "x-1",
        "title": "",
        "url": "https://n.test/x",
        "source": "CNN",
        "published_at": "2022-09-14",
        "authors": ["A. Writer"],
        "body": 'A <a href="https://n.test">linked</a> sentence.',
    }
    (tmp_path / "c.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "d.json").write_text(json.dumps([{**record, "id": "x-2", "text": "Other.", "body": None}]))
    articles, errors = _load(tmp_path / "c.jsonl", tmp_path / "d.json")
    assert not errors
    first = articles[0]
    assert (first.id, first.source, first.published_at, first.authors) == (
        "x-1",
        "CNN",
        date(2022, 9, 14),
        ("A. Writer",),
    )
    assert first.body == "A linked sentence."
    assert articles[1].body == "Other."


def test_folders_are_read_recursively_skipping_hidden_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.txt").write_text("Deep\nDeep body.")
    (tmp_path / "top.txt").write_text("Top\nTop body.")
    (tmp_path / "notes.csv").write_text("x,y")
    (tmp_path / ".hidden.txt").write_text("Hidden\nHidden body.")
    articles, errors = _load(tmp_path)
    assert sorted(a.title for a in articles) == ["Deep", "Top"]
    assert not errors


def test_bad_inputs_name_the_file_and_reason_and_the_rest_still_loads(tmp_path: Path) -> None:
    good = {"id": "ok", "body": "Fine."}
    (tmp_path / "mixed.jsonl").write_text(
        json.dumps(good)
        + "\n{not json\n"
        + json.dumps({"id": "nobody"})
        + "\n"
        + json.dumps({"body": "x", "published_at": "someday"})
        + "\n"
    )
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9\nBody.".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("Only a title\n")
    (tmp_path / "data.csv").write_text("a,b")
    articles, errors = _load(
        tmp_path / "mixed.jsonl",
        tmp_path / "latin1.txt",
        tmp_path / "empty.txt",
        tmp_path / "data.csv",
        tmp_path / "missing.txt",
    )
    assert [a.id for a in articles] == ["ok"]
    messages = [str(e) for e in errors]
    assert messages[0].startswith(f"{tmp_path / 'mixed.jsonl'}:2: invalid JSON")
    assert messages[1] == f"{tmp_path / 'mixed.jsonl'}:3: missing or empty 'body' (or 'text')"
    assert messages[2].startswith(f"{tmp_path / 'mixed.jsonl'}:4: unreadable 'published_at'")
    assert messages[3].startswith(f"{tmp_path / 'latin1.txt'}: not UTF-8")
    assert messages[4] == f"{tmp_path / 'empty.txt'}: no body after the title line"
    assert messages[5].startswith(f"{tmp_path / 'data.csv'}: unsupported file type .csv")
    assert messages[6] == f"{tmp_path / 'missing.txt'}: no such file or folder"


def test_ids_are_stable_without_an_explicit_id(tmp_path: Path) -> None:
    record = {"url": "https://n.test/story", "body": "Text."}
    (tmp_path / "one.jsonl").write_text(json.dumps(record))
    (tmp_path / "two.jsonl").write_text(json.dumps({**record, "body": "Text, updated."}))
    first, _ = _load(tmp_path / "one.jsonl")
    second, _ = _load(tmp_path / "two.jsonl")
    assert first[0].id == second[0].id
    assert first[0].content_hash != second[0].content_hash


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


_FIELDS = ("id", "title", "url", "source", "published_at", "authors", "body", "text")


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(_FIELDS),
        _JSON | st.sampled_from(["http://[", "https://x:99999/", "\x00", "..", "2023-02-30", "Quokkas."]),
    )
)
def test_any_record_is_an_article_or_an_article_error(record: dict[str, object]) -> None:
    """What a .jsonl line or a POST can hold: never any other exception (one would abort an ingest)."""
    with contextlib.suppress(ArticleError):
        parse_record(record, "record")
