/*
 * News QA chat widget: one custom element, <news-qa>, with an open Shadow DOM.
 *
 * Embed with one tag (the API is the script's own origin unless data-api says otherwise):
 *   <script src="http://HOST:PORT/widget.js" data-key="KEY" defer></script>
 * or as markup, once the script is loaded:
 *   <news-qa api="http://HOST:PORT" key="KEY" mode="inline"></news-qa>
 *
 * Options (data-* on the script tag, or attributes of the element): api, key, title, greeting,
 * placeholder, mode (launcher | inline), position (bottom-right | bottom-left), accent (a CSS colour),
 * lang (en | de | fr).
 *
 * Answers stream from POST /ask/stream (Server-Sent Events read with fetch), each question sent with
 * the thread before it as its history (the last 20 messages), so follow-ups ("When will it open?") are
 * understood; "New conversation" forgets the thread. Under an answer whose question was searched with
 * the conversation, the widget shows what was searched ("Searched: ..."). "Follow this question" under an
 * answer makes a watch of it (POST /watches: the key needs the watch scope) and shows the answers the news
 * brings later, as they come (GET /watches/{id}/events, read with fetch). Article text is data:
 * it is only ever set with textContent, and links are only followed when they are http(s).
 * Nothing is defined globally except the element itself.
 */
(() => {
  "use strict";

  const TAG = "news-qa";
  const TIMEOUT_MS = 45000;
  // What the API takes as a question's history: 20 messages (10 turns), each within the question's limit.
  const HISTORY_MESSAGES = 20;
  const MESSAGE_CHARS = 2000;
  const OPTIONS = ["api", "key", "title", "greeting", "placeholder", "mode", "position", "accent", "lang"];
  const LABELS = {
    en: {
      title: "Ask the news",
      greeting: "Ask a question about the news. Every answer quotes its sources.",
      placeholder: "Your question",
      inputLabel: "Question about the news",
      send: "Ask",
      open: "Open news questions",
      close: "Close",
      sources: "Sources",
      closest: "Closest sources",
      unstated: "The sources quoted do not say why.",
      thinking: "Looking through the news…",
      abstained: "The indexed news does not answer this question.",
      network: "The news service cannot be reached. Check your connection and try again.",
      timeout: "The news service took too long to answer. Please try again.",
      refused: "This page is not set up to ask the news service. Please tell the page's owner.",
      busy: "The news service is starting or busy. Please try again in a moment.",
      limited: (s) => `Too many questions right now. Try again in ${s} s.`,
      failed: "The question could not be answered.",
      undated: "undated",
      headlineOnly: "headline only: no article text to quote",
      log: "Conversation",
      restart: "New conversation",
      searched: "Searched:",
      locale: "en-GB",
      coverage: (a, b) => (a === b ? `Sources from ${b}` : `Sources from ${a} to ${b}`),
      follow: "Follow this question",
      following: "Following: new answers from the news will appear here.",
      followFailed: "This question cannot be followed here.",
      fresh: "New answer",
    },
    de: {
      title: "Fragen an die Nachrichten",
      greeting: "Stellen Sie eine Frage zu den Nachrichten. Jede Antwort zitiert ihre Quellen.",
      placeholder: "Ihre Frage",
      inputLabel: "Frage zu den Nachrichten",
      send: "Fragen",
      open: "Nachrichtenfragen öffnen",
      close: "Schließen",
      sources: "Quellen",
      closest: "Nächstliegende Quellen",
      unstated: "Die zitierten Quellen sagen nicht, warum.",
      thinking: "Die Nachrichten werden durchsucht…",
      abstained: "Die indexierten Nachrichten beantworten diese Frage nicht.",
      network: "Der Nachrichtendienst ist nicht erreichbar. Bitte später erneut versuchen.",
      timeout: "Der Nachrichtendienst hat zu lange gebraucht. Bitte erneut versuchen.",
      refused: "Diese Seite ist für den Nachrichtendienst nicht eingerichtet. Bitte den Seitenbetreiber informieren.",
      busy: "Der Nachrichtendienst startet oder ist ausgelastet. Bitte gleich erneut versuchen.",
      limited: (s) => `Zu viele Fragen. Bitte in ${s} s erneut versuchen.`,
      failed: "Die Frage konnte nicht beantwortet werden.",
      undated: "ohne Datum",
      headlineOnly: "nur Schlagzeile: kein Artikeltext zum Zitieren",
      log: "Unterhaltung",
      restart: "Neue Unterhaltung",
      searched: "Gesucht:",
      locale: "de-DE",
      coverage: (a, b) => (a === b ? `Quellen vom ${b}` : `Quellen vom ${a} bis ${b}`),
      follow: "Dieser Frage folgen",
      following: "Sie folgen dieser Frage: neue Antworten aus den Nachrichten erscheinen hier.",
      followFailed: "Dieser Frage kann hier nicht gefolgt werden.",
      fresh: "Neue Antwort",
    },
    fr: {
      title: "Questions sur l'actualité",
      greeting: "Posez une question sur l'actualité. Chaque réponse cite ses sources.",
      placeholder: "Votre question",
      inputLabel: "Question sur l'actualité",
      send: "Demander",
      open: "Ouvrir les questions sur l'actualité",
      close: "Fermer",
      sources: "Sources",
      closest: "Sources les plus proches",
      unstated: "Les sources citées ne disent pas pourquoi.",
      thinking: "Recherche dans l'actualité…",
      abstained: "Les articles indexés ne répondent pas à cette question.",
      network: "Le service d'actualité est injoignable. Réessayez plus tard.",
      timeout: "Le service d'actualité a mis trop de temps à répondre. Réessayez.",
      refused: "Cette page n'est pas configurée pour ce service. Prévenez le responsable de la page.",
      busy: "Le service démarre ou est occupé. Réessayez dans un instant.",
      limited: (s) => `Trop de questions. Réessayez dans ${s} s.`,
      failed: "La question n'a pas pu recevoir de réponse.",
      undated: "sans date",
      headlineOnly: "titre seul : aucun texte d’article à citer",
      log: "Conversation",
      restart: "Nouvelle conversation",
      searched: "Recherché :",
      locale: "fr-FR",
      coverage: (a, b) => (a === b ? `Sources du ${b}` : `Sources du ${a} au ${b}`),
      follow: "Suivre cette question",
      following: "Question suivie : les nouvelles réponses de l'actualité apparaîtront ici.",
      followFailed: "Cette question ne peut pas être suivie ici.",
      fresh: "Nouvelle réponse",
    },
  };

  const STYLE = `
    :host { all: initial; --accent: #1f5fbf; --bg: #ffffff; --fg: #1b1f24; --muted: #5b6570; --line: #d9dee4; --soft: #f3f5f8;
      color: var(--fg); }
    @media (prefers-color-scheme: dark) {
      :host { --bg: #16191d; --fg: #e8ecf0; --muted: #a3adb8; --line: #323840; --soft: #20252b; }
    }
    * { box-sizing: border-box; }
    /* Fonts set here, not on :host: a page rule such as "* { font-family: ... !important }" reaches the
       host element itself, and everything inside would inherit it. */
    .panel, .launcher, input, button { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
    .launcher { position: fixed; bottom: 20px; width: 56px; height: 56px; border-radius: 50%; border: 0;
      background: var(--accent); color: #fff; font-size: 24px; cursor: pointer; z-index: 2147483646;
      box-shadow: 0 4px 14px rgba(0,0,0,.25); }
    .launcher:focus-visible, button:focus-visible, input:focus-visible, a:focus-visible {
      outline: 3px solid var(--accent); outline-offset: 2px; }
    .right { right: 20px; } .left { left: 20px; }
    .panel { display: flex; flex-direction: column; background: var(--bg); color: var(--fg);
      border: 1px solid var(--line); border-radius: 12px; overflow: hidden; }
    .floating { position: fixed; bottom: 88px; width: min(420px, calc(100vw - 32px));
      height: min(600px, calc(100vh - 120px)); z-index: 2147483647; box-shadow: 0 8px 30px rgba(0,0,0,.25);
      transition: opacity .15s ease, transform .15s ease; }
    .inline { width: 100%; min-height: 420px; max-height: 720px; }
    .panel[hidden] { display: none; }
    header { display: flex; align-items: center; justify-content: space-between; padding: 10px 14px;
      background: var(--accent); color: #fff; }
    header h2 { margin: 0; font-size: 16px; font-weight: 600; flex: 1; }
    header button { background: transparent; border: 0; color: #fff; font-size: 20px; cursor: pointer; }
    header button.restart { font-size: 13px; border: 1px solid rgba(255,255,255,.6); border-radius: 6px;
      padding: 2px 8px; margin-right: 6px; }
    header button.restart:disabled { opacity: .6; cursor: default; }
    .log { flex: 1; overflow-y: auto; padding: 12px 14px; display: flex; flex-direction: column; gap: 12px; }
    .greeting { color: var(--muted); margin: 0; }
    .question { align-self: flex-end; background: var(--accent); color: #fff; padding: 8px 12px;
      border-radius: 12px 12px 2px 12px; max-width: 85%; margin: 0; white-space: pre-wrap; }
    .answer { background: var(--soft); padding: 10px 12px; border-radius: 12px 12px 12px 2px; }
    .answer p { margin: 0 0 6px; }
    .cite { color: var(--accent); font-weight: 600; text-decoration: none; margin-left: 2px; }
    .cite:hover { text-decoration: underline; }
    .status { color: var(--muted); font-style: italic; }
    .error { color: #b3261e; }
    @media (prefers-color-scheme: dark) { .error { color: #ffb4ab; } .cite { color: #9cc3ff; } }
    .sources { margin-top: 8px; border-top: 1px solid var(--line); padding-top: 6px; }
    .sources h3 { font-size: 13px; margin: 0 0 4px; color: var(--muted); font-weight: 600; }
    .sources ul { margin: 0; padding-left: 18px; font-size: 13px; }
    .sources li { margin-bottom: 6px; }
    .meta { color: var(--muted); }
    .quote { display: block; margin-top: 2px; font-style: italic; }
    .quote.headline-only { font-style: normal; opacity: 0.8; }
    .quote .n { font-style: normal; color: var(--muted); margin-right: 4px; }
    .short { font-weight: 700; font-style: normal; }
    .follow { margin-top: 8px; font-size: 13px; }
    .follow button { padding: 4px 10px; border: 1px solid var(--accent); border-radius: 6px; background: var(--bg);
      color: var(--accent); font: inherit; cursor: pointer; }
    .follow button:disabled { opacity: .6; cursor: default; }
    .follow .note { color: var(--muted); margin: 4px 0 0; }
    .follow ul.alerts { margin: 6px 0 0; padding-left: 18px; }
    .follow ul.alerts li { margin-bottom: 4px; }
    .searched { color: var(--muted); font-size: 12px; margin: 6px 0 0; }
    .coverage { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
    ol.timeline { margin: 0 0 6px; padding-left: 20px; }
    ol.timeline li { margin-bottom: 4px; }
    .coverage-note { font-size: 12px; margin: 4px 0 0; font-weight: 600; }
    .unstated { font-weight: 600; margin: 0 0 4px; }
    form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid var(--line); background: var(--bg); }
    label.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
    input { flex: 1; padding: 9px 10px; border-radius: 8px; border: 1px solid var(--line); background: var(--bg);
      color: var(--fg); font: inherit; }
    form button { padding: 9px 14px; border: 0; border-radius: 8px; background: var(--accent); color: #fff;
      font: inherit; cursor: pointer; }
    form button:disabled { opacity: .6; cursor: default; }
    @media (prefers-reduced-motion: reduce) { .floating { transition: none; } }
  `;

  function safeUrl(value) {
    try {
      const url = new URL(value);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  /** "17 Apr" and "13 Jun 2024" for a range within one year, both with the year otherwise. */
  function dayRange(locale, oldest, newest) {
    const day = (iso, year) =>
      new Intl.DateTimeFormat(locale, { day: "numeric", month: "short", year: year ? "numeric" : undefined, timeZone: "UTC" })
        .format(new Date(`${iso}T00:00:00Z`));
    const sameYear = oldest.slice(0, 4) === newest.slice(0, 4);
    return [oldest === newest ? day(newest, true) : day(oldest, !sameYear), day(newest, true)];
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  /** Server-Sent Events from a fetch Response: yields {event, data} (comments are skipped). */
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
        if (data.length) yield { event, data: data.join("\n") };
      }
    }
  }

  class NewsQa extends HTMLElement {
    static get observedAttributes() {
      return OPTIONS;
    }

    constructor() {
      super();
      this.attachShadow({ mode: "open" });
      this.turns = [];
      this.busy = false;
      this.streams = new Map(); // turn id -> the AbortController of its followed question's stream
      this.drawers = new Map(); // turn id -> the function that redraws it (render makes new ones)
    }

    connectedCallback() {
      this.turns = this.restore();
      this.render();
    }

    disconnectedCallback() {
      for (const stream of this.streams.values()) stream.abort();
      this.streams.clear();
    }

    attributeChangedCallback() {
      if (this.isConnected && this.shadowRoot.childElementCount) this.render();
    }

    option(name, fallback) {
      const value = this.getAttribute(name);
      return value === null || value === "" ? fallback : value;
    }

    get labels() {
      return LABELS[this.option("lang", "en")] || LABELS.en;
    }

    get api() {
      return this.option("api", location.origin).replace(/\/+$/, "");
    }

    get storageKey() {
      return `news-qa:${this.api}:${this.option("title", "")}`;
    }

    restore() {
      try {
        return JSON.parse(sessionStorage.getItem(this.storageKey) || "[]");
      } catch {
        return [];
      }
    }

    save() {
      try {
        sessionStorage.setItem(this.storageKey, JSON.stringify(this.turns.slice(-20)));
      } catch {
        /* storage full or disabled: the conversation just does not survive a reload */
      }
    }

    render() {
      const t = this.labels;
      const root = this.shadowRoot;
      root.replaceChildren();
      const style = el("style");
      style.textContent = STYLE;
      root.append(style);
      const accent = this.option("accent", "");
      if (accent && CSS.supports("color", accent)) this.style.setProperty("--accent", accent);
      const inline = this.option("mode", "launcher") === "inline";
      const side = this.option("position", "bottom-right") === "bottom-left" ? "left" : "right";
      const panelId = "news-qa-panel";

      this.log = el("div", { className: "log", role: "log", "aria-live": "polite", "aria-label": t.log });
      this.input = el("input", {
        id: "news-qa-input",
        type: "text",
        autocomplete: "off",
        maxlength: "2000",
        placeholder: this.option("placeholder", t.placeholder),
      });
      this.send = el("button", { type: "submit", text: t.send });
      const form = el(
        "form",
        {},
        el("label", { for: "news-qa-input", className: "visually-hidden", text: t.inputLabel }),
        this.input,
        this.send,
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.ask(this.input.value);
      });
      const heading = el("h2", { id: "news-qa-title", text: this.option("title", t.title) });
      this.restartButton = el("button", { type: "button", className: "restart", text: t.restart });
      this.restartButton.addEventListener("click", () => this.restart());
      const header = el("header", {}, heading, this.restartButton);
      this.panel = el(
        "section",
        {
          id: panelId,
          className: `panel ${inline ? "inline" : `floating ${side}`}`,
          role: inline ? "region" : "dialog",
          "aria-labelledby": "news-qa-title",
        },
        header,
        this.log,
        form,
      );
      if (!inline) {
        const close = el("button", { type: "button", "aria-label": t.close, text: "×" });
        close.addEventListener("click", () => this.toggle(false));
        header.append(close);
        this.panel.hidden = true;
        this.launcher = el("button", {
          type: "button",
          className: `launcher ${side}`,
          "aria-label": t.open,
          "aria-expanded": "false",
          "aria-controls": panelId,
          text: "?",
        });
        this.launcher.addEventListener("click", () => this.toggle(this.panel.hidden));
        this.panel.addEventListener("keydown", (event) => {
          if (event.key === "Escape") this.toggle(false);
        });
        root.append(this.launcher);
      }
      root.append(this.panel);
      this.log.append(el("p", { className: "greeting", text: this.option("greeting", t.greeting) }));
      for (const turn of this.turns) {
        const { nodes, draw } = this.turnNodes(turn);
        this.log.append(...nodes);
        if (turn.follow && turn.follow.id) this.listen(turn, draw);
      }
      this.log.scrollTop = this.log.scrollHeight;
    }

    /** Forget the thread: the next question is asked alone. */
    restart() {
      if (this.busy) return;
      for (const stream of this.streams.values()) stream.abort();
      this.streams.clear();
      this.turns = [];
      this.save();
      this.log.replaceChildren(el("p", { className: "greeting", text: this.option("greeting", this.labels.greeting) }));
      this.input.focus();
    }

    /** The thread as the API's ``history``: answered turns, oldest first, bounded as the API bounds it. */
    history() {
      const messages = [];
      for (const turn of this.turns) {
        if (turn.error || !turn.done) continue;
        messages.push({ role: "user", content: turn.question.slice(0, MESSAGE_CHARS) });
        const said = turn.sentences
          .map((s) => s.text + s.cites.map((n) => ` [${n}]`).join(""))
          .join(" ")
          .slice(0, MESSAGE_CHARS);
        if (!said.trim()) continue;
        const cited = turn.abstained ? [] : [...new Set((turn.sources || []).map((c) => c.article_id))];
        const message = { role: "assistant", content: said };
        if (cited.length) message.article_ids = cited.slice(0, 50);
        messages.push(message);
      }
      return messages.slice(-HISTORY_MESSAGES);
    }

    toggle(open) {
      if (!this.launcher) return;
      this.panel.hidden = !open;
      this.launcher.setAttribute("aria-expanded", String(open));
      if (open) this.input.focus();
      else this.launcher.focus();
    }

    /** ``text`` as nodes, the short answer's words in bold when ``text`` is the quote of its citation. */
    marked(text, short, byNumber, cites) {
      const source = short && cites.includes(short.n) ? byNumber.get(short.n) : null;
      if (!source || source.quote !== text || text.slice(short.start, short.end) !== short.text) return [text];
      return [text.slice(0, short.start), el("strong", { className: "short", text: short.text }), text.slice(short.end)];
    }

    /** DOM nodes for one turn, and a function that redraws its answer part as it streams in. */
    turnNodes(turn) {
      const question = el("p", { className: "question", text: turn.question });
      const answer = el("div", { className: "answer" });
      const draw = () => {
        answer.replaceChildren();
        const t = this.labels;
        if (turn.error) {
          answer.append(el("p", { className: "error", role: "alert", text: turn.error }));
          return;
        }
        if (turn.abstained) answer.append(el("p", { text: t.abstained }));
        else if (!turn.sentences.length && !turn.done) {
          answer.append(el("p", { className: "status", text: t.thinking }));
        }
        const byNumber = new Map((turn.sources || []).map((c) => [c.n, c]));
        // Each article is listed once, with every quote the answer took from it; [n] leads to its entry.
        const groups = [];
        const groupOf = new Map();
        const anchor = new Map();
        for (const c of turn.sources || []) {
          let group = groupOf.get(c.article_id);
          if (!group) {
            group = { first: c, quotes: [] };
            groupOf.set(c.article_id, group);
            groups.push(group);
          }
          group.quotes.push(c);
          anchor.set(c.n, `news-qa-source-${turn.id}-${group.first.n}`);
        }
        if (!turn.abstained && turn.sentences.length) {
          // A timeline ("how did ... unfold?") is a list of dated entries, oldest first; an answer, one paragraph.
          if (turn.unstated) answer.append(el("p", { className: "unstated", role: "note", text: t.unstated }));
          const paragraph = el(turn.timeline ? "ol" : "p", { className: turn.timeline ? "timeline" : null });
          turn.sentences.forEach((sentence, i) => {
            const line = turn.timeline ? el("li") : paragraph;
            if (turn.timeline) paragraph.append(line);
            if (i && !turn.timeline) line.append(" ");
            line.append(...this.marked(sentence.text, turn.short, byNumber, sentence.cites));
            for (const n of sentence.cites) {
              const source = byNumber.get(n);
              const href = source && safeUrl(source.url);
              const link = el("a", {
                className: "cite",
                href: href || `#${anchor.get(n) || ""}`,
                target: href ? "_blank" : null,
                rel: href ? "noopener noreferrer" : null,
                title: source ? source.title : null,
                text: `[${n}]`,
              });
              if (!href) {
                // No web address: go to the source in the list (fragments do not reach into a shadow root).
                link.addEventListener("click", (event) => {
                  event.preventDefault();
                  const item = this.shadowRoot.getElementById(anchor.get(n) || "");
                  if (item) {
                    item.scrollIntoView({ block: "nearest" });
                    item.focus();
                  }
                });
              }
              line.append(" ", link);
            }
          });
          answer.append(paragraph);
        }
        if (turn.done && turn.searched && turn.searched !== turn.question) {
          answer.append(el("p", { className: "searched", text: `${t.searched} ${turn.searched}` }));
        }
        if (groups.length && (turn.done || turn.sentences.length)) {
          const list = el("ul");
          for (const { first, quotes } of groups) {
            const href = safeUrl(first.url);
            const headline = href
              ? el("a", { href, target: "_blank", rel: "noopener noreferrer", text: first.title })
              : el("span", { text: first.title });
            const meta = [first.source, first.published_at || t.undated].filter(Boolean).join(", ");
            const item = el(
              "li",
              { id: `news-qa-source-${turn.id}-${first.n}`, tabindex: "-1" },
              headline,
              el("span", { className: "meta", text: ` (${meta})` }),
            );
            for (const c of quotes) {
              item.append(
                c.headline_only
                  ? el("span", { className: "quote headline-only", text: t.headlineOnly })
                  : el(
                      "span",
                      { className: "quote" },
                      el("span", { className: "n", text: `[${c.n}]` }),
                      "“",
                      ...this.marked(c.quote, turn.short, byNumber, [c.n]),
                      "”",
                    ),
              );
            }
            list.append(item);
          }
          const sources = el("div", { className: "sources" }, el("h3", { text: turn.abstained ? t.closest : t.sources }), list);
          const coverage = turn.coverage;
          if (coverage && coverage.oldest && coverage.newest) {
            const [from, to] = dayRange(t.locale, coverage.oldest, coverage.newest);
            sources.append(el("p", { className: "coverage", text: t.coverage(from, to) }));
          }
          if (coverage && coverage.note) sources.append(el("p", { className: "coverage-note", role: "note", text: coverage.note }));
          answer.append(sources);
        }
        if (turn.done && !turn.error) answer.append(this.followNodes(turn, draw));
      };
      draw();
      return { nodes: [question, answer], draw };
    }

    /** Under an answer: "Follow this question", then the alerts the news brings for it (POST /watches,
     * then its event stream, read with fetch so the key goes in a header, as for questions). */
    followNodes(turn, draw) {
      const t = this.labels;
      const box = el("div", { className: "follow" });
      const follow = turn.follow || {};
      if (!follow.id) {
        const button = el("button", { type: "button", text: t.follow });
        button.disabled = Boolean(follow.busy);
        button.addEventListener("click", () => this.follow(turn, draw));
        box.append(button);
        if (follow.error) box.append(el("p", { className: "error", role: "alert", text: follow.error }));
        return box;
      }
      box.append(el("p", { className: "note", role: "status", text: t.following }));
      const list = el("ul", { className: "alerts", "aria-live": "polite" });
      for (const alert of follow.alerts || []) {
        const first = (alert.citations || [])[0] || {};
        const href = safeUrl(first.url);
        const said = (alert.short_answer && alert.short_answer.text) || alert.answer;
        const item = el("li", { className: "alert" }, el("strong", { text: `${t.fresh}: ` }), el("span", { text: said }));
        const meta = [first.source, first.published_at || t.undated].filter(Boolean).join(", ");
        item.append(" (", href ? el("a", { href, target: "_blank", rel: "noopener noreferrer", text: first.title || href })
          : el("span", { text: first.title || "" }), `, ${meta})`);
        list.append(item);
      }
      box.append(list);
      return box;
    }

    headers(extra) {
      const headers = { ...extra };
      const key = this.option("key", "");
      if (key) headers.authorization = `Bearer ${key}`;
      return headers;
    }

    async follow(turn, draw) {
      turn.follow = { busy: true };
      draw();
      try {
        const response = await fetch(`${this.api}/watches`, {
          method: "POST",
          headers: this.headers({ "content-type": "application/json" }),
          body: JSON.stringify({ question: turn.searched || turn.question }),
          credentials: "omit",
        });
        if (!response.ok) {
          const refusal = await this.refusal(response);
          turn.follow = { error: response.status === 403 ? this.labels.followFailed : refusal };
        } else {
          turn.follow = { id: (await response.json()).id, alerts: [] };
          this.listen(turn, draw);
        }
      } catch {
        // Questions work from this page, so a request refused here is the key: the browser hides a 403
        // across origins, and says so in its console.
        console.error(
          `news-qa: following a question needs a key with the watch scope that lists ${location.origin} ` +
            `(rag keys add NAME --scope watch --origin ${location.origin})`,
        );
        turn.follow = { error: this.labels.followFailed };
      }
      draw();
      this.save();
    }

    /** The followed question's alerts as they come; reconnects after a break from the last one seen. */
    async listen(turn, draw) {
      this.drawers.set(turn.id, draw);
      if (this.streams.has(turn.id)) return; // already listening: the new drawing is used from now on
      const follow = turn.follow;
      const controller = new AbortController();
      this.streams.set(turn.id, controller);
      const redraw = () => this.drawers.get(turn.id)();
      while (!controller.signal.aborted && turn.follow === follow) {
        const last = follow.alerts.length ? follow.alerts[follow.alerts.length - 1].seq : 0;
        try {
          const response = await fetch(`${this.api}/watches/${follow.id}/events?after=${last}`, {
            headers: this.headers({ accept: "text/event-stream" }),
            signal: controller.signal,
            credentials: "omit",
          });
          if (!response.ok) break; // the watch was removed, or the key no longer allows it
          for await (const { event, data } of events(response)) {
            if (event !== "alert") continue;
            follow.alerts.push(JSON.parse(data));
            redraw();
            this.save();
          }
        } catch {
          if (controller.signal.aborted) break;
        }
        await new Promise((resolve) => setTimeout(resolve, 5000));
      }
      if (this.streams.get(turn.id) === controller) this.streams.delete(turn.id);
    }

    async ask(text) {
      const question = (text || "").trim();
      if (!question || this.busy) return;
      this.busy = true;
      this.send.disabled = true;
      this.restartButton.disabled = true;
      this.input.value = "";
      const history = this.history();
      const turn = { id: Date.now().toString(36), question, sentences: [], sources: [], done: false };
      this.turns.push(turn);
      const { nodes, draw } = this.turnNodes(turn);
      this.log.append(...nodes);
      this.log.scrollTop = this.log.scrollHeight;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
      const headers = { "content-type": "application/json", accept: "text/event-stream" };
      const key = this.option("key", "");
      if (key) headers.authorization = `Bearer ${key}`;
      try {
        const response = await fetch(`${this.api}/ask/stream`, {
          method: "POST",
          headers,
          body: JSON.stringify(history.length ? { question, history } : { question }),
          signal: controller.signal,
          credentials: "omit",
        });
        if (!response.ok) {
          turn.error = await this.refusal(response);
        } else {
          for await (const { event, data } of events(response)) {
            const body = JSON.parse(data);
            if (event === "sources") {
              turn.sources = body.citations;
              turn.coverage = body.coverage;
              turn.timeline = body.timeline;
              turn.short = body.short_answer || null;
              turn.unstated = Boolean(body.unstated);
            }
            else if (event === "sentence") turn.sentences.push({ text: body.text, cites: body.cites });
            else if (event === "done") {
              turn.done = true;
              turn.abstained = body.abstained;
              turn.searched = body.standalone_question;
            } else if (event === "error") {
              turn.error = body.detail || this.labels.failed;
              console.error(`news-qa: the question could not be answered (${body.status} ${body.title})`);
            }
            draw();
            this.log.scrollTop = this.log.scrollHeight;
          }
          if (!turn.done && !turn.error) turn.error = this.labels.failed;
        }
      } catch (error) {
        turn.error = error && error.name === "AbortError" ? this.labels.timeout : await this.unreachable();
      } finally {
        clearTimeout(timer);
        draw();
        this.save();
        this.busy = false;
        this.send.disabled = false;
        this.restartButton.disabled = false;
        this.input.focus();
      }
    }

    /** A fetch that failed without a response: the server is down, or the browser refused the page
     * (CORS: the key does not list this page's origin). An opaque request tells the two apart. */
    async unreachable() {
      try {
        await fetch(`${this.api}/health`, { mode: "no-cors", credentials: "omit", cache: "no-store" });
      } catch {
        console.error(`news-qa: ${this.api} cannot be reached`);
        return this.labels.network;
      }
      console.error(
        `news-qa: ${this.api} refused requests from ${location.origin} (CORS). ` +
          "Add this origin to the key: rag keys add NAME --scope ask --origin " + location.origin,
      );
      return this.labels.refused;
    }

    async refusal(response) {
      const t = this.labels;
      let problem = {};
      try {
        problem = await response.json();
      } catch {
        /* not a problem body */
      }
      const status = response.status;
      if (status === 401 || status === 403) {
        console.error(
          `news-qa: ${this.api} refused this page (${status} ${problem.title || ""}: ${problem.detail || ""}). ` +
            "Check data-key and that the key lists this page's origin (rag keys add ... --origin).",
        );
        return t.refused;
      }
      if (status === 429) {
        const wait = parseInt(response.headers.get("retry-after") || "", 10);
        return t.limited(Number.isFinite(wait) ? wait : 60);
      }
      if (status === 503) return t.busy;
      return problem.detail || t.failed;
    }
  }

  if (!customElements.get(TAG)) customElements.define(TAG, NewsQa);

  // The one-tag embedding: a <script src=".../widget.js" data-...> creates its own element, unless the
  // page already holds <news-qa> markup (then the script only defines the element).
  const script = document.currentScript;
  if (script && script.src && !document.querySelector(TAG)) {
    const widget = document.createElement(TAG);
    widget.setAttribute("api", new URL(script.src).origin);
    for (const name of OPTIONS) {
      const value = script.dataset[name];
      if (value !== undefined) widget.setAttribute(name, value);
    }
    const mount = () => {
      if (widget.getAttribute("mode") === "inline") script.after(widget);
      else document.body.append(widget);
    };
    if (document.body) mount();
    else document.addEventListener("DOMContentLoaded", mount, { once: true });
  }
})();
