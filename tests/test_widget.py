"""The chat widget in a real headless Chromium (Debian's, driven by Playwright), against a real `rag serve`.

The host pages come from another loopback origin (``http://localhost:P2``) than the API
(``http://127.0.0.1:P1``), so every request crosses origins and CORS is exercised. The same pages served
as ``http://127.0.0.1:P2`` are an origin no key lists. Screenshots go to docs/ for the README.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from index import Embedder, load_paths, make_ingestor
from index.records import Article
from tests.conftest import NEWS, ROOT, SEEDS, make_settings, open_local
from tests.servers import free_port, rag, rag_env, serving

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
DOCS = ROOT / "docs"
KARABAKH = "Why did Russian peacekeepers leave Karabakh?"
HOSTILE_TITLE = '<img src=x onerror="window.__pwned = 1">Harbour council <script>window.__pwned = 2</script>'


@dataclass
class Site:
    api: str
    pages: str
    """Host pages on an origin the widget key lists."""
    other: str
    """The same pages on an origin no key lists."""
    admin: str
    """An admin key (to add articles while a page follows a question)."""


def _page(script: str, body: str = "") -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>host page</title>"
        "<style>button { background: hotpink !important; } * { font-family: serif !important; }</style>"
        f"</head><body><h1>Host page</h1>{body}{script}</body></html>"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path, embedder: Embedder) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("widget")
    settings = make_settings(folder / "data", tiktoken_dir)
    store = open_local(settings, embedder)
    ingestor = make_ingestor(settings.index, store, embedder)
    assert not ingestor.ingest(load_paths([SEEDS, NEWS]), progress=False).failed
    # Markup that reached the index without the cleaning at the door (an older index, another writer):
    # the widget must still show it as text and run nothing.
    hostile = Article(
        id="hostile",
        title=HOSTILE_TITLE,
        body="The harbour council met on Tuesday to discuss the <b>ferry timetable</b> and "
        "<script>window.__pwned = 3</script> the new harbour toll for visiting yachts.",
        source="<i>Harbour Gazette</i>",
        url="javascript:window.__pwned = 4",
    )
    assert ingestor.ingest([hostile], progress=False).added == ("hostile",)
    # A video page whose text was never captured: found by its address, pointed to, never quoted.
    video = Article(
        id="video",
        title="",
        body="",
        source="www.cnn.com",
        url="https://www.cnn.com/2022/07/27/business/sprite-green-bottle/index.html",
    )
    assert ingestor.ingest([video], progress=False).added == ("video",)
    store.close()

    env = rag_env(settings.service.data_dir, tiktoken_dir)
    pages_port = free_port()
    pages_origin = f"http://localhost:{pages_port}"
    widget_key = rag(
        "keys", "add", "widget", "--scope", "ask", "--origin", pages_origin, env=env
    ).stdout.strip()
    limited_key = rag(
        "keys", "add", "limited", "--scope", "ask", "--origin", pages_origin, "--per-minute", "1", env=env
    ).stdout.strip()
    watcher_key = rag(
        "keys", "add", "watcher", "--scope", "watch", "--origin", pages_origin, env=env
    ).stdout.strip()
    admin_key = rag("keys", "add", "desk", "--scope", "admin", env=env).stdout.strip()
    with serving(env | {"RAG_WATCH_CHECK_SECONDS": "0.2"}, folder / "server.log") as api:
        pages = folder / "pages"
        pages.mkdir()
        tag = f'<script src="{api}/widget.js" data-key="{widget_key}" defer></script>'
        (pages / "launcher.html").write_text(_page(tag))
        (pages / "inline.html").write_text(
            _page(
                f'<script src="{api}/widget.js" data-key="{widget_key}" data-mode="inline" '
                f'data-title="Newsroom desk" data-accent="#7a2e8e" data-lang="de" defer></script>',
                "<p>Above the widget.</p>",
            )
        )
        (pages / "markup.html").write_text(
            _page(
                f'<script src="{api}/widget.js" defer></script>',
                f'<news-qa api="{api}" key="{widget_key}" mode="inline" title="Markup widget"></news-qa>',
            )
        )
        (pages / "limited.html").write_text(
            _page(
                f'<script src="{api}/widget.js" data-key="{limited_key}" data-mode="inline" defer></script>'
            )
        )
        (pages / "follow.html").write_text(
            _page(
                f'<script src="{api}/widget.js" data-key="{watcher_key}" data-mode="inline" defer></script>'
            )
        )
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(pages))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", pages_port), handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield Site(api=api, pages=pages_origin, other=f"http://127.0.0.1:{pages_port}", admin=admin_key)
        finally:
            httpd.shutdown()
            httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def console() -> list[str]:
    """What the page under test wrote to the browser console."""
    return []


@pytest.fixture
def page(browser: Browser, console: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    opened = context.new_page()
    opened.on("console", lambda message: console.append(message.text))
    yield opened
    context.close()


def _ask(page: Page, question: str) -> None:
    field = (
        page.locator("news-qa")
        .get_by_label("Question about the news")
        .or_(page.locator("news-qa").get_by_label("Frage zu den Nachrichten"))
    )
    field.fill(question)
    field.press("Enter")


def test_launcher_streams_a_cited_answer_and_follows_citations(
    site: Site, page: Page, console: list[str]
) -> None:
    page.goto(f"{site.pages}/launcher.html")
    widget = page.locator("news-qa")
    launcher = widget.get_by_role("button", name="Open news questions")
    expect(launcher).to_be_visible()
    background = launcher.evaluate("b => getComputedStyle(b).backgroundColor")
    assert background != "rgb(255, 105, 180)"  # the host page's hotpink never reaches the widget
    page.screenshot(path=str(DOCS / "widget-launcher.png"))
    launcher.click()
    expect(widget.get_by_role("dialog")).to_be_visible()
    font = widget.get_by_role("dialog").evaluate("p => getComputedStyle(p).fontFamily")
    assert "system-ui" in font  # the host page's "* { font-family: serif !important }" stays out
    _ask(page, KARABAKH)
    answer = widget.locator(".answer").last
    expect(answer.locator(".cite").first).to_have_text("[1]", timeout=30_000)
    expect(answer).to_contain_text("withdrawal of Russian peacekeepers")
    # The article never says why: no bold words posing as the reason, and the answer says so.
    expect(answer.locator(".unstated")).to_have_text("The sources quoted do not say why.")
    expect(answer.locator("strong.short")).to_have_count(0)
    sources = answer.locator(".sources li")
    expect(sources.first).to_contain_text("Putin-Aliyev meeting in Sochi")
    expect(answer.locator(".sources h3")).to_have_text("Sources")
    answer.locator(".unstated").scroll_into_view_if_needed()  # the screenshot shows the note first
    page.screenshot(path=str(DOCS / "widget-answer.png"))
    # The seed has no web address: its [1] leads to the source in the list.
    answer.locator(".cite").first.click()
    assert widget.evaluate("w => w.shadowRoot.activeElement && w.shadowRoot.activeElement.id").startswith(
        "news-qa-source-"
    )
    # An article with a web address: [n] links to it, in a new tab, without an opener.
    _ask(page, "Who set the course record at the harbour marathon?")
    second = widget.locator(".answer").nth(1)
    cite = second.locator(".cite").first
    expect(cite).to_have_attribute("href", "https://example.org/news/marathon-record", timeout=30_000)
    expect(cite).to_have_attribute("target", "_blank")
    expect(cite).to_have_attribute("rel", "noopener noreferrer")
    expect(second.locator(".sources a").first).to_have_text("Course record falls at the harbour marathon")
    # The conversation survives a reload in the same tab.
    page.reload()
    widget.get_by_role("button", name="Open news questions").click()
    expect(widget.locator(".question")).to_have_count(2)
    expect(widget.locator(".answer").first).to_contain_text("withdrawal of Russian peacekeepers")
    assert not [m for m in console if "news-qa" in m]


def test_hostile_article_text_runs_nothing(site: Site, page: Page) -> None:
    page.goto(f"{site.pages}/markup.html")
    widget = page.locator("news-qa")
    _ask(page, "What did the harbour council discuss about the ferry timetable and the yacht toll?")
    answer = widget.locator(".answer").last
    # Among the sources (which one the reader leads with is the reader's choice, not this test's).
    item = answer.locator(".sources li").filter(has_text="Harbour council").first
    expect(item).to_be_visible(timeout=30_000)
    expect(item).to_contain_text('<img src=x onerror="window.__pwned = 1">')  # shown as text
    expect(item).to_contain_text("<i>Harbour Gazette</i>")
    assert item.locator("a").count() == 0  # a javascript: address is never a link
    assert widget.evaluate("w => w.shadowRoot.querySelectorAll('img, script, b, i').length") == 0
    assert page.evaluate("() => window.__pwned") is None


def test_a_headline_only_source_is_listed_without_a_quote(site: Site, page: Page) -> None:
    page.goto(f"{site.pages}/markup.html")
    widget = page.locator("news-qa")
    _ask(page, "Why is Sprite changing its green bottle?")
    answer = widget.locator(".answer").last
    item = answer.locator(".sources li").filter(has_text="Sprite green bottle")
    expect(item).to_contain_text("headline only: no article text to quote", timeout=30_000)
    expect(item.locator("a")).to_have_attribute("href", re.compile(r"^https://www\.cnn\.com/2022/07/27/"))
    assert item.locator(".quote").evaluate("q => q.textContent.includes('“')") is False


def test_a_page_on_an_unlisted_origin_is_refused_clearly(site: Site, page: Page, console: list[str]) -> None:
    page.goto(f"{site.other}/launcher.html")
    widget = page.locator("news-qa")
    widget.get_by_role("button", name="Open news questions").click()
    _ask(page, KARABAKH)
    expect(widget.get_by_role("alert")).to_have_text(
        "This page is not set up to ask the news service. Please tell the page's owner.", timeout=30_000
    )
    assert any("refused requests from" in m and "--origin" in m for m in console)


def test_a_rate_limit_is_shown_with_the_wait(site: Site, page: Page) -> None:
    page.goto(f"{site.pages}/limited.html")
    widget = page.locator("news-qa")
    _ask(page, KARABAKH)
    expect(widget.locator(".answer .cite").first).to_be_visible(timeout=30_000)
    _ask(page, "Who won the marathon?")
    alert = widget.get_by_role("alert")
    expect(alert).to_contain_text("Too many questions right now. Try again in", timeout=30_000)
    seconds = int(alert.inner_text().rsplit("in ", 1)[1].split(" ")[0])
    assert 1 <= seconds <= 60


def test_inline_mode_with_options(site: Site, page: Page) -> None:
    page.goto(f"{site.pages}/inline.html")
    widget = page.locator("news-qa")
    expect(widget.get_by_role("region", name="Newsroom desk")).to_be_visible()
    assert widget.get_by_role("button", name="Nachrichtenfragen öffnen").count() == 0  # no launcher
    assert page.evaluate("() => document.querySelector('p').nextElementSibling.tagName") == "SCRIPT"
    header = widget.locator("header")
    assert header.evaluate("h => getComputedStyle(h).backgroundColor") == "rgb(122, 46, 142)"
    _ask(page, KARABAKH)
    expect(widget.locator(".answer .cite").first).to_be_visible(timeout=30_000)
    expect(widget.locator(".sources h3")).to_have_text("Quellen")


def test_keyboard_only(site: Site, page: Page) -> None:
    page.goto(f"{site.pages}/launcher.html")
    widget = page.locator("news-qa")
    for _ in range(10):  # Tab until the launcher has focus
        page.keyboard.press("Tab")
        if (
            widget.evaluate("w => w.shadowRoot.activeElement && w.shadowRoot.activeElement.className")
            == "launcher right"
        ):
            break
    else:
        raise AssertionError("the launcher cannot be reached with Tab")
    page.keyboard.press("Enter")
    assert widget.evaluate("w => w.shadowRoot.activeElement.id") == "news-qa-input"
    page.keyboard.type(KARABAKH)
    page.keyboard.press("Enter")
    expect(widget.locator(".answer .cite").first).to_be_visible(timeout=30_000)
    live = widget.locator("[aria-live=polite]")
    expect(live).to_contain_text("withdrawal of Russian peacekeepers")
    page.keyboard.press("Escape")
    expect(widget.get_by_role("dialog")).to_be_hidden()
    assert widget.evaluate("w => w.shadowRoot.activeElement.className") == "launcher right"


def test_dark_mode_and_reduced_motion(site: Site, browser: Browser) -> None:
    context = browser.new_context(
        color_scheme="dark", reduced_motion="reduce", viewport={"width": 1000, "height": 760}
    )
    page = context.new_page()
    page.goto(f"{site.pages}/launcher.html")
    widget = page.locator("news-qa")
    widget.get_by_role("button", name="Open news questions").click()
    _ask(page, KARABAKH)
    expect(widget.locator(".answer .cite").first).to_be_visible(timeout=30_000)
    panel = widget.get_by_role("dialog")
    assert panel.evaluate("p => getComputedStyle(p).backgroundColor") == "rgb(22, 25, 29)"
    assert panel.evaluate("p => getComputedStyle(p).transitionDuration") == "0s"
    page.screenshot(path=str(DOCS / "widget-dark.png"))
    context.close()


def test_the_demo_page_embeds_a_working_widget(
    tmp_path: Path, tiktoken_dir: Path, page: Page, site: Site, console: list[str]
) -> None:
    """What `make serve` gives: no keys, loopback only, and the demo page at / answers."""
    del site  # served first, so the keyed server's tests do not share this one's start-up
    env = rag_env(tmp_path / "data", tiktoken_dir)
    assert rag("ingest", "--quiet", str(SEEDS), env=env).returncode == 0
    with serving(env, tmp_path / "server.log") as api:
        page.goto(f"{api}/")
        widget = page.locator("news-qa")
        widget.get_by_role("button", name="Open news questions").click()
        _ask(page, KARABAKH)
        expect(widget.locator(".answer .cite").first).to_have_text("[1]", timeout=30_000)
        expect(widget.locator(".answer")).to_contain_text("withdrawal of Russian peacekeepers")
    assert not [m for m in console if "news-qa" in m]


def test_a_follow_up_shows_what_was_searched_and_new_conversation_forgets_the_thread(
    site: Site, page: Page, console: list[str]
) -> None:
    page.goto(f"{site.pages}/markup.html")  # another origin than the API's
    widget = page.locator("news-qa")
    _ask(page, KARABAKH)
    first = widget.locator(".answer").first
    expect(first.locator(".cite").first).to_have_text("[1]", timeout=30_000)
    # Each article once, with every quote the answer took from it.
    cited = first.locator(".cite").evaluate_all("links => links.map(a => a.textContent)")
    items = first.locator(".sources li")
    expect(items).to_have_count(1)  # all of the answer's sentences come from the seed
    expect(items.first.locator(".quote")).to_have_count(len(set(cited)))
    assert len(set(cited)) >= 2
    expect(first.locator(".searched")).to_have_count(0)  # a question that stands alone
    expect(first.locator(".coverage")).to_have_count(0)  # the seed is undated
    _ask_when_idle(page, "Who set the course record at the harbour marathon?")
    expect(widget.locator(".answer").nth(1).locator(".coverage")).to_have_text(
        "Sources from 21 Apr 2024", timeout=30_000
    )
    _ask_when_idle(page, "How many finished?")
    third = widget.locator(".answer").nth(2)
    expect(third.locator(".searched")).to_contain_text("Searched: How many finished? (", timeout=30_000)
    expect(third.locator(".searched")).to_contain_text("marathon")
    expect(third).to_contain_text("18,000 runners finished")
    # The reader's short answer, in bold where it stands: in the answer and in its quote among the sources.
    expect(third.locator("p strong.short")).to_contain_text("18,000")
    expect(third.locator(".sources .quote strong.short")).to_contain_text("18,000")
    page.screenshot(path=str(DOCS / "widget-follow-up.png"))
    # "New conversation" forgets the thread, here and after a reload; the next question stands alone.
    widget.get_by_role("button", name="New conversation").click()
    expect(widget.locator(".question")).to_have_count(0)
    page.reload()
    expect(widget.locator(".question")).to_have_count(0)
    _ask(page, "How many finished?")
    alone = widget.locator(".answer").first
    expect(alone.locator(".sources")).to_be_visible(timeout=30_000)
    expect(alone.locator(".searched")).to_have_count(0)
    assert not [m for m in console if "news-qa" in m]


def _ask_when_idle(page: Page, question: str) -> None:
    """Ask once the previous answer has finished (the widget takes one question at a time)."""
    expect(page.locator("news-qa").locator("form button")).to_be_enabled(timeout=30_000)
    _ask(page, question)


def test_follow_this_question_shows_what_the_news_answers_later(
    site: Site, page: Page, console: list[str]
) -> None:
    page.goto(f"{site.pages}/follow.html")  # a key with the watch scope, on another origin than the API's
    widget = page.locator("news-qa")
    _ask(page, "When will the Gull Point lighthouse open to visitors?")
    answer = widget.locator(".answer").first
    follow = answer.get_by_role("button", name="Follow this question")
    expect(follow).to_be_visible(timeout=30_000)
    follow.click()
    expect(answer.locator(".follow .note")).to_contain_text("Following", timeout=30_000)
    article = {
        "id": "gull-light", "title": "Lighthouse restored", "source": "Harbour Times",
        "url": "https://harbour.example/gull-light", "published_at": "2024-04-15",
        "body": "The old lighthouse on Gull Point has been restored by volunteers. It will open to visitors "
        "on 1 June, the heritage trust said on Monday.",
    }  # fmt: skip
    posted = httpx.post(
        f"{site.api}/articles", json=article, headers={"authorization": f"Bearer {site.admin}"}
    )
    assert posted.status_code == 200, posted.text
    alert = answer.locator(".follow li.alert")
    expect(alert).to_contain_text("1 June", timeout=60_000)
    expect(alert.locator("a")).to_have_attribute("href", "https://harbour.example/gull-light")
    page.screenshot(path=str(DOCS / "widget-watch.png"))
    # A key without the watch scope gets a clear refusal under the answer, and nothing is made.
    page.goto(f"{site.pages}/markup.html")
    _ask(page, "When will the Gull Point lighthouse open to visitors?")
    other = widget.locator(".answer").first
    other.get_by_role("button", name="Follow this question").click()
    expect(other.locator(".follow .error")).to_have_text("This question cannot be followed here.")
    watches = httpx.get(f"{site.api}/watches", headers={"authorization": f"Bearer {site.admin}"}).json()
    assert len(watches) == 1
    assert watches[0]["owner"] == "watcher"
    assert [m for m in console if "news-qa" in m] == [
        f"news-qa: following a question needs a key with the watch scope that lists {site.pages} "
        f"(rag keys add NAME --scope watch --origin {site.pages})"
    ]
