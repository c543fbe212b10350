// StreamForge chat page. Plain browser JavaScript: no build step, no dependencies, nothing
// fetched from anywhere but this server.
//
// Safety rule for everything below: text that comes from the server (answers, titles,
// snippets, file names, error messages) only ever reaches the page through textContent,
// createTextNode or attribute properties checked first (links: http and https only). Nothing
// is parsed as HTML.

const BASE = location.pathname.replace(/\/ui\/?$/, "");
// The answer being streamed, kept per tab so that a reload can pick it up where it was.
const ACTIVE_KEY = "streamforge.activeStream";
// The API key, for a server with authentication on; kept in this browser only.
const API_KEY = "streamforge.apiKey";
// The collections that "Use my documents" leaves out (ids), kept in this browser.
const UNPICKED_KEY = "streamforge.unpickedCollections";
const POLL_MS = 500;

const $ = (id) => document.getElementById(id);
const ui = {
  sessions: $("sessions"),
  sessionsEmpty: $("sessions-empty"),
  newChat: $("new-chat"),
  messages: $("messages"),
  welcome: $("welcome"),
  composer: $("composer"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  model: $("model"),
  template: $("template"),
  rag: $("rag"),
  notice: $("notice"),
  noticeText: $("notice-text"),
  noticeClose: $("notice-close"),
  uploadForm: $("upload-form"),
  collection: $("collection"),
  file: $("file"),
  upload: $("upload"),
  documents: $("documents"),
  picks: $("rag-collections"),
  picksEmpty: $("rag-collections-empty"),
  ragScope: $("rag-scope"),
  viewer: $("viewer"),
  viewerTitle: $("viewer-title"),
  viewerWhere: $("viewer-where"),
  viewerText: $("viewer-text"),
  viewerClose: $("viewer-close"),
  keyForm: $("key-form"),
  key: $("api-key"),
  keyState: $("key-state"),
  menu: $("menu"),
  sidebar: $("sidebar"),
  chat: $("chat"),
};

const state = {
  sessionId: null,
  sessions: [],
  turn: null, // the Turn being streamed, if any
  unloading: false,
  documents: new Map(), // document id → its item in the list (one per document)
  collections: [],
  unpicked: readUnpicked(),
};

// --------------------------------------------------------------------------------------------
// Small DOM helpers

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function notify(message) {
  ui.noticeText.textContent = message;
  ui.notice.hidden = false;
}

function clearNotice() {
  ui.notice.hidden = true;
  ui.noticeText.textContent = "";
}

function nearBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

// --------------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const UNREACHABLE = "The server cannot be reached. Check that it is running and try again.";
const NEEDS_KEY = "This server needs an API key: enter yours under \u201cAPI key\u201d.";

function apiKey() {
  try {
    return localStorage.getItem(API_KEY) || "";
  } catch {
    return "";
  }
}

// Request headers with the API key, when there is one.
function withKey(headers) {
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function errorFrom(response) {
  if (response.status === 401) return new ApiError(NEEDS_KEY, 401, "unauthorized");
  let message = `The server answered ${response.status} ${response.statusText}`.trim() + ".";
  let code = "http_error";
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      message = body.error.message;
      code = body.error.code || code;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(message, response.status, code);
}

async function api(method, path, body) {
  const init = { method, headers: withKey({ Accept: "application/json" }) };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch {
    throw new ApiError(UNREACHABLE, 0, "network");
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

// --------------------------------------------------------------------------------------------
// Server-Sent Events over a fetch() body, parsed by the WHATWG rules: lines end at CRLF, LF
// or CR; a blank line dispatches; "data" lines are joined with "\n"; ":" starts a comment;
// "id" sets the last event id (kept across events).

export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.lastEventId = "";
    this.reset();
  }

  reset() {
    this.data = [];
    this.hasData = false;
    this.type = "";
    this.hasId = false;
  }

  push(text) {
    this.buffer += text;
    let start = 0;
    for (;;) {
      let end = start;
      const length = this.buffer.length;
      while (end < length && this.buffer[end] !== "\n" && this.buffer[end] !== "\r") end++;
      if (end >= length) break;
      // A CR at the very end may be the first half of a CRLF split across two chunks.
      if (this.buffer[end] === "\r" && end + 1 >= length) break;
      const line = this.buffer.slice(start, end);
      start = end + (this.buffer[end] === "\r" && this.buffer[end + 1] === "\n" ? 2 : 1);
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.hasData) {
        this.onEvent({
          type: this.type || "message",
          data: this.data.join("\n"),
          id: this.lastEventId,
          hasId: this.hasId,
        });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "event") {
      this.type = value;
    } else if (field === "id" && !value.includes("\0")) {
      this.lastEventId = value;
      this.hasId = true;
    }
  }
}

// --------------------------------------------------------------------------------------------
// Markdown, rendered into DOM nodes. A deliberately small dialect: paragraphs, line breaks,
// headings, fenced and inline code, bold, italic, bullet and numbered lists (nested by
// indentation), block quotes, rules and links (http and https only). Anything else stays
// text. An unfinished construct (a fence still open while the answer streams) renders as far
// as it goes.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:\s+(.*))?$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LINK = /^\[([^\[\]\n]+)\]\(\s*<?([^\s()<>]+)>?(?:\s+"[^"\n]*")?\s*\)/;
const BARE_URL = /^https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]}]/i;
const ESCAPABLE = /[\\`*_{}\[\]()#+\-.!>~|]/;
const WORD = /[\p{L}\p{N}]/u;

function isBlank(line) {
  return /^\s*$/.test(line);
}

function startsBlock(line) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    (LIST_ITEM.test(line) && LIST_ITEM.exec(line)[3] !== undefined)
  );
}

export function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  renderBlocks(source.replace(/\r\n?/g, "\n").split("\n"), root);
  return root;
}

function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let match;
    if (isBlank(line)) {
      i++;
    } else if ((match = FENCE.exec(line))) {
      const fence = match[1];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++; // the closing fence (or past the end while it is still streaming)
      const pre = el("pre");
      const code = el("code", body.join("\n"));
      if (match[2]) code.dataset.language = match[2];
      pre.append(code);
      parent.append(pre);
    } else if ((match = HEADING.exec(line))) {
      const heading = el(`h${match[1].length}`);
      renderInline((match[2] || "").replace(/\s+#+$/, ""), heading, false);
      parent.append(heading);
      i++;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
    } else if (LIST_ITEM.test(line) && LIST_ITEM.exec(line)[3] !== undefined) {
      i = renderList(lines, i, parent);
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (match = QUOTE.exec(lines[i]))) {
        inner.push(match[1]);
        i++;
      }
      const quote = el("blockquote");
      renderBlocks(inner, quote);
      parent.append(quote);
    } else {
      const paragraph = el("p");
      renderInline(line.trim(), paragraph, false);
      i++;
      while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i])) {
        paragraph.append(el("br"));
        renderInline(lines[i].trim(), paragraph, false);
        i++;
      }
      parent.append(paragraph);
    }
  }
}

function renderList(lines, start, parent) {
  const first = LIST_ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const number = parseInt(first[2], 10);
    if (number !== 1) list.start = number;
  }
  let item = null;
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    const match = LIST_ITEM.exec(line);
    if (match && match[3] !== undefined) {
      const depth = match[1].length;
      if (depth >= indent + 2 && item) {
        i = renderList(lines, i, item);
        continue;
      }
      if (depth < indent || /\d/.test(match[2]) !== ordered) break;
      item = el("li");
      renderInline(match[3], item, false);
      list.append(item);
      i++;
    } else if (isBlank(line)) {
      // A blank line ends the list unless another item of it (or a nested one) follows.
      let next = i + 1;
      while (next < lines.length && isBlank(lines[next])) next++;
      const after = next < lines.length ? LIST_ITEM.exec(lines[next]) : null;
      const continues =
        after &&
        after[3] !== undefined &&
        after[1].length >= indent &&
        (after[1].length >= indent + 2 || /\d/.test(after[2]) === ordered);
      if (!continues) break;
      i = next;
    } else if (item && /^\s+\S/.test(line) && !startsBlock(line.trim())) {
      item.append(el("br"));
      renderInline(line.trim(), item, false);
      i++;
    } else {
      break;
    }
  }
  parent.append(list);
  return i;
}

function safeUrl(raw) {
  try {
    const url = new URL(raw);
    if (url.protocol === "http:" || url.protocol === "https:") return url.href;
  } catch {
    // Not an absolute URL: not a link.
  }
  return null;
}

function link(url, parent) {
  const anchor = el("a");
  anchor.href = url;
  anchor.rel = "noopener noreferrer";
  anchor.target = "_blank";
  parent.append(anchor);
  return anchor;
}

// The end of an emphasis opened with `delim` at `from`, or -1.
function closing(text, from, delim) {
  const mark = delim[0];
  for (let j = from; j < text.length; j++) {
    if (text[j] === "`") {
      // Skip code spans: emphasis does not close inside them.
      const end = text.indexOf("`", j + 1);
      if (end === -1) return -1;
      j = end;
      continue;
    }
    if (!text.startsWith(delim, j)) continue;
    if (delim.length === 1 && text[j + 1] === mark) {
      j++; // part of a double delimiter
      continue;
    }
    if (j === from || /\s/.test(text[j - 1])) continue;
    if (mark === "_" && WORD.test(text[j + delim.length] || "")) continue;
    return j;
  }
  return -1;
}

function renderInline(text, parent, inLink) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && ESCAPABLE.test(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      let run = 1;
      while (text[i + run] === "`") run++;
      const fence = "`".repeat(run);
      const end = text.indexOf(fence, i + run);
      if (end !== -1) {
        flush();
        let code = text.slice(i + run, end);
        if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
        parent.append(el("code", code));
        i = end + run;
      } else {
        buffer += fence;
        i += run;
      }
      continue;
    }
    if (c === "[" && !inLink) {
      const match = LINK.exec(text.slice(i));
      if (match) {
        const url = safeUrl(match[2]);
        if (url) {
          flush();
          renderInline(match[1], link(url, parent), true);
        } else {
          buffer += match[0]; // not http(s): shown as the text it is
        }
        i += match[0].length;
        continue;
      }
    }
    if ((c === "h" || c === "H") && !inLink && !WORD.test(text[i - 1] || "")) {
      const match = BARE_URL.exec(text.slice(i));
      const url = match && safeUrl(match[0]);
      if (url) {
        flush();
        link(url, parent).textContent = match[0];
        i += match[0].length;
        continue;
      }
    }
    if (c === "*" || c === "_") {
      const delim = text[i + 1] === c ? c + c : c;
      const next = text[i + delim.length] || "";
      const opens = next !== "" && !/\s/.test(next) && !(c === "_" && WORD.test(text[i - 1] || ""));
      const end = opens ? closing(text, i + delim.length, delim) : -1;
      if (end !== -1) {
        flush();
        const node = el(delim.length === 2 ? "strong" : "em");
        renderInline(text.slice(i + delim.length, end), node, inLink);
        parent.append(node);
        i = end + delim.length;
      } else {
        buffer += delim;
        i += delim.length;
      }
      continue;
    }
    buffer += c;
    i++;
  }
  flush();
}

// --------------------------------------------------------------------------------------------
// One message on the page

const STATUS_WORDS = {
  streaming: "still being written",
  cancelled: "stopped",
  interrupted: "interrupted",
  failed: "failed",
};

class MessageView {
  constructor(role, id) {
    this.role = role;
    this.root = el("article", null, `message ${role}`);
    if (id) this.root.dataset.messageId = id;
    const head = el("div", null, "role");
    head.append(el("span", role === "user" ? "You" : "Assistant"));
    this.status = el("span", null, "status");
    this.status.hidden = true;
    head.append(this.status);
    this.content = el("div", null, "content");
    this.error = el("p", null, "error");
    this.error.hidden = true;
    this.retry = el("button", "Retry", "retry small");
    this.retry.type = "button";
    this.retry.hidden = true;
    this.citations = el("div", null, "citations");
    this.citations.hidden = true;
    this.root.append(head, this.content, this.error, this.retry, this.citations);
    this.frame = 0;
    this.pending = null;
  }

  setPlain(text) {
    this.content.textContent = text;
  }

  setMarkdown(text) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.content.replaceChildren(renderMarkdown(text));
  }

  // Re-render at most once a frame however fast the deltas come.
  scheduleMarkdown(text) {
    this.pending = text;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      const follow = nearBottom();
      this.content.replaceChildren(renderMarkdown(this.pending));
      if (follow) scrollToBottom();
    });
  }

  setStreaming(on) {
    this.root.classList.toggle("streaming", on);
  }

  setStatus(status) {
    const words = STATUS_WORDS[status];
    this.root.dataset.status = status || "";
    this.status.hidden = !words;
    this.status.textContent = words || "";
    this.status.className = `status ${status || ""}`;
  }

  setError(message) {
    this.error.hidden = !message;
    this.error.textContent = message || "";
  }

  // Offer to send the question again (once): the failed reply stays as it was stored.
  offerRetry(question) {
    if (typeof question !== "string" || !question.trim()) return;
    this.retry.hidden = false;
    this.retry.onclick = () => {
      if (state.turn) return;
      this.retry.hidden = true;
      send(question);
    };
  }

  setCitations(sources) {
    const list = Array.isArray(sources) ? sources : [];
    this.citations.hidden = list.length === 0;
    if (!list.length) {
      this.citations.replaceChildren();
      return;
    }
    const items = el("ol");
    list.forEach((source, position) => items.append(citation(source, position + 1)));
    this.citations.replaceChildren(el("h3", "Sources"), items);
  }
}

function citation(source, position) {
  const number = Number.isInteger(source.index) ? source.index : position;
  const name = source.document_name || source.document_id || "document";
  const page = Number.isInteger(source.page) ? source.page : null;
  const details = el("details", null, "citation");
  details.dataset.documentId = source.document_id || "";
  const summary = el("summary");
  summary.append(el("span", `[${number}] ${name}`, "name"));
  if (page !== null) summary.append(el("span", `page ${page}`, "page"));
  if (typeof source.score === "number") {
    summary.append(el("span", `score ${source.score.toFixed(3)}`, "score"));
  }
  const snippet = el("blockquote", source.snippet ?? source.text ?? "", "snippet");
  details.append(summary, snippet);
  const spanned = Number.isInteger(source.start) && Number.isInteger(source.end);
  if (spanned) {
    const where = `characters ${source.start}–${source.end} of the document`;
    details.append(el("p", page === null ? where : `page ${page}, ${where}`, "where"));
  }
  if (spanned && typeof source.document_id === "string" && source.document_id) {
    const open = el("button", "Open in the document", "link small open-passage");
    open.type = "button";
    open.addEventListener("click", () => openPassage(source));
    details.append(open);
  }
  const item = el("li");
  item.append(details);
  return item;
}

function errorWords(error) {
  if (!error || typeof error !== "object") return "The answer failed.";
  return typeof error.message === "string" && error.message
    ? error.message
    : `The answer failed (${error.code || "unknown error"}).`;
}

function showMessages(present) {
  ui.welcome.hidden = present;
}

function viewForStored(message) {
  const view = new MessageView(message.role, message.id);
  if (message.role === "user") {
    view.setPlain(message.content);
  } else {
    view.setMarkdown(message.content);
    view.setStatus(message.status);
    view.setCitations(message.citations);
    if (message.error) view.setError(errorWords(message.error));
  }
  return view;
}

// --------------------------------------------------------------------------------------------
// A streamed answer: fed by the POST /chat body, or by an EventSource after a reload

class Turn {
  constructor(view, question = null) {
    this.view = view;
    this.question = question;
    this.text = "";
    this.sources = [];
    this.error = null;
    this.streamId = null;
    this.sessionId = null;
    this.messageId = null;
    this.lastEventId = "";
    this.finished = false;
    this.stopRequested = false;
    this.source = null; // the EventSource of a resumed stream
    view.setStreaming(true);
  }

  static restore(saved, view) {
    const turn = new Turn(view);
    turn.streamId = saved.stream_id;
    turn.sessionId = saved.session_id;
    turn.messageId = saved.message_id;
    turn.lastEventId = saved.last_event_id || "";
    turn.text = typeof saved.text === "string" ? saved.text : "";
    turn.sources = saved.sources || [];
    view.setMarkdown(turn.text);
    view.setCitations(turn.sources);
    view.setStatus("");
    return turn;
  }

  handle(type, data, id) {
    if (this.finished) return;
    if (id) this.lastEventId = id;
    let payload = null;
    if (type !== "message") {
      try {
        payload = JSON.parse(data);
      } catch {
        payload = null;
      }
    }
    switch (type) {
      case "session":
        if (payload) this.started(payload);
        break;
      case "sources":
        this.sources = (payload && payload.sources) || [];
        this.view.setCitations(this.sources);
        break;
      case "message":
        this.text += data;
        if (this.error && this.error.retryable) this.clearError();
        this.view.scheduleMarkdown(this.text);
        break;
      case "error":
        this.error = payload || { message: "The answer failed." };
        // Only a resume that could not reach the event log is tried again by itself; any
        // other error is followed by `done`, and the answer is over.
        this.view.setError(
          this.error.code === "event_log_unavailable"
            ? `${errorWords(this.error)} Reconnecting…`
            : errorWords(this.error),
        );
        break;
      case "done":
        this.finish(payload || {});
        return;
      default:
        break; // usage and any future event: nothing to show
    }
    this.save();
  }

  started(payload) {
    this.streamId = payload.stream_id;
    this.messageId = payload.assistant_message_id || this.messageId;
    this.view.root.dataset.messageId = this.messageId || "";
    const fresh = this.sessionId === null && state.sessionId !== payload.session_id;
    this.sessionId = payload.session_id;
    if (fresh && state.turn === this) {
      state.sessionId = payload.session_id;
      refreshSessions();
    }
    if (this.stopRequested) this.stop();
  }

  clearError() {
    this.error = null;
    this.view.setError("");
  }

  save() {
    if (this.finished || !this.streamId) return;
    const saved = {
      stream_id: this.streamId,
      session_id: this.sessionId,
      message_id: this.messageId,
      last_event_id: this.lastEventId,
      text: this.text,
      sources: this.sources,
    };
    try {
      // Text and event id in one write: after a reload they always match.
      sessionStorage.setItem(ACTIVE_KEY, JSON.stringify(saved));
    } catch {
      // Storage full or disabled: a reload then loses the stream, nothing else.
    }
  }

  finish(done) {
    this.finished = true;
    if (this.source) this.source.close();
    this.view.setMarkdown(this.text);
    this.view.setStreaming(false);
    this.view.setStatus(done.status || "completed");
    if (done.status === "failed" && !this.error) this.view.setError("The answer failed.");
    if (this.error && this.error.retryable && done.status === "completed") this.clearError();
    if (this.error && done.status !== "completed") this.view.setError(errorWords(this.error));
    if (done.status === "failed" || done.status === "interrupted") {
      this.view.offerRetry(this.question);
    }
    this.release();
    refreshSessions();
  }

  fail(message) {
    this.finished = true;
    if (this.source) this.source.close();
    this.view.setStreaming(false);
    this.view.setError(message);
    this.view.offerRetry(this.question);
    this.release();
  }

  release() {
    forgetActive(this.streamId);
    if (state.turn === this) {
      state.turn = null;
      setBusy(false);
    }
  }

  async stop() {
    if (!this.streamId) {
      this.stopRequested = true; // the session event, with the stream id, comes first
      return;
    }
    ui.stop.disabled = true;
    try {
      await api("POST", `/chat/streams/${encodeURIComponent(this.streamId)}/cancel`);
    } catch (error) {
      notify(error.message);
    } finally {
      ui.stop.disabled = false;
    }
  }

  // Follow the stream with the browser's EventSource from the last event seen: the server
  // replays exactly the events after it, then the live ones; EventSource reconnects by itself
  // (sending Last-Event-ID) if the connection drops, and a 204 means nothing more will come.
  resume() {
    if (this.source) this.source.close();
    // EventSource cannot send an Authorization header: with a key, follow over fetch().
    if (apiKey()) {
      this.follow();
      return;
    }
    const url =
      `${BASE}/chat/streams/${encodeURIComponent(this.streamId)}` +
      `?last_event_id=${encodeURIComponent(this.lastEventId || "0")}`;
    const source = new EventSource(url);
    this.source = source;
    for (const type of ["session", "sources", "message", "usage", "done"]) {
      source.addEventListener(type, (event) => this.handle(type, event.data, event.lastEventId));
    }
    source.addEventListener("error", (event) => {
      if (event instanceof MessageEvent) {
        this.handle("error", event.data, event.lastEventId);
      } else if (source.readyState === EventSource.CLOSED && !this.finished) {
        this.settle();
      }
    });
  }

  // The same as resume(), over fetch() with the key: reconnect from the last event seen
  // until the stream ends, as EventSource would.
  async follow() {
    while (!this.finished && !state.unloading) {
      let response;
      try {
        response = await fetch(
          `${BASE}/chat/streams/${encodeURIComponent(this.streamId)}`,
          {
            headers: withKey({
              Accept: "text/event-stream",
              "Last-Event-ID": String(this.lastEventId || "0"),
            }),
          },
        );
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      if (response.status === 204) {
        await this.settle();
        return;
      }
      if (!response.ok || !response.body) {
        this.fail((await errorFrom(response)).message);
        return;
      }
      // A broken connection: go round again from the last event that arrived.
      await this.consume(response);
      if (!this.finished) await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  // Read an event-stream body to its end, handling each event; false if the connection broke.
  async consume(response) {
    const parser = new SSEParser((event) => this.handle(event.type, event.data, event.id));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
      parser.push(decoder.decode());
      return true;
    } catch {
      return false;
    }
  }

  // The stream has nothing more to give (expired, or a 204): show what was stored.
  async settle() {
    if (this.source) this.source.close();
    try {
      const messages = await allMessages(this.sessionId);
      const stored = messages.find((message) => message.id === this.messageId);
      if (stored && stored.status !== "streaming") {
        this.text = stored.content;
        this.sources = stored.citations || this.sources;
        this.view.setCitations(this.sources);
        if (stored.error) this.error = stored.error;
        if (stored.error) this.view.setError(errorWords(stored.error));
        this.finish({ status: stored.status });
        return;
      }
    } catch (error) {
      notify(error.message);
    }
    this.fail("The rest of this answer is no longer available.");
  }
}

function readActive() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(ACTIVE_KEY) || "null");
    if (saved && typeof saved.stream_id === "string" && typeof saved.session_id === "string") {
      return saved;
    }
  } catch {
    // Unreadable: forget it.
  }
  sessionStorage.removeItem(ACTIVE_KEY);
  return null;
}

function forgetActive(streamId) {
  const saved = readActive();
  if (saved && (!streamId || saved.stream_id === streamId)) sessionStorage.removeItem(ACTIVE_KEY);
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.hidden = !busy;
  ui.stop.disabled = false;
}

// --------------------------------------------------------------------------------------------
// Sending

function chatBody(message) {
  const body = { message };
  if (state.sessionId) body.session_id = state.sessionId;
  const choice = ui.model.value;
  if (choice) {
    // /v1/models lists providers ("simulated") and provider/model pairs ("openai/gpt-4o").
    const slash = choice.indexOf("/");
    if (slash === -1) {
      body.provider = choice;
    } else {
      body.provider = choice.slice(0, slash);
      body.model = choice.slice(slash + 1);
    }
  }
  if (ui.template.value) body.template = ui.template.value;
  if (ui.rag.checked) {
    const picked = pickedCollections();
    // Every collection picked: "all of mine", which includes collections made after this.
    body.rag = picked.length === state.collections.length ? true : { collections: picked };
  }
  return body;
}

async function send(message) {
  clearNotice();
  showMessages(true);
  const body = chatBody(message);
  const question = new MessageView("user");
  question.setPlain(message);
  const turn = new Turn(new MessageView("assistant"), message);
  ui.messages.append(question.root, turn.view.root);
  scrollToBottom();
  state.turn = turn;
  setBusy(true);

  let response;
  try {
    response = await fetch(`${BASE}/chat`, {
      method: "POST",
      headers: withKey({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(body),
    });
  } catch {
    turn.fail(UNREACHABLE);
    if (!ui.input.value) ui.input.value = message;
    return;
  }
  if (!response.ok || !response.body) {
    const error = await errorFrom(response);
    turn.fail(error.message);
    if (!ui.input.value) ui.input.value = message;
    return;
  }
  // A broken connection is resumed below, from the last event that arrived.
  await turn.consume(response);
  if (turn.finished || state.unloading) return;
  if (turn.streamId) {
    turn.resume();
  } else {
    turn.fail("The answer stopped before it began. Please try again.");
  }
}

// --------------------------------------------------------------------------------------------
// Sessions

async function refreshSessions() {
  try {
    const page = await api("GET", "/sessions?limit=100");
    state.sessions = page.items;
  } catch (error) {
    notify(error.message);
  }
  renderSessions();
}

function renderSessions() {
  ui.sessions.replaceChildren(...state.sessions.map(sessionItem));
  ui.sessionsEmpty.hidden = state.sessions.length > 0;
}

function sessionItem(session) {
  const item = el("li", null, "session");
  item.dataset.sessionId = session.id;
  if (session.id === state.sessionId) item.classList.add("current");
  const title = session.title || "Untitled conversation";
  const open = el("button", title, "open");
  open.type = "button";
  open.title = title;
  open.addEventListener("click", () => openSession(session.id));
  const actions = el("span", null, "actions");
  const rename = el("button", "Rename", "link small rename");
  rename.type = "button";
  rename.addEventListener("click", () => startRename(item, session));
  const remove = el("button", "Delete", "link small delete");
  remove.type = "button";
  remove.addEventListener("click", () => deleteSession(session));
  actions.append(rename, remove);
  item.append(open, actions);
  return item;
}

function startRename(item, session) {
  const input = el("input");
  input.type = "text";
  input.maxLength = 200;
  input.value = session.title || "";
  input.setAttribute("aria-label", "New title");
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== session.title) {
      try {
        await api("PATCH", `/sessions/${encodeURIComponent(session.id)}`, { title });
      } catch (error) {
        notify(error.message);
      }
    }
    await refreshSessions();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  item.replaceChildren(input);
  input.focus();
  input.select();
}

async function deleteSession(session) {
  const title = session.title || "this conversation";
  if (!confirm(`Delete “${title}” and all its messages?`)) return;
  const turn = state.turn;
  if (turn && turn.sessionId === session.id) {
    await turn.stop();
  }
  try {
    await api("DELETE", `/sessions/${encodeURIComponent(session.id)}`);
  } catch (error) {
    notify(error.message);
  }
  if (state.sessionId === session.id) newChat();
  await refreshSessions();
}

// On a narrow screen the sidebar is a drawer over the chat, closed unless asked for.
function setDrawer(open) {
  document.body.classList.toggle("drawer-open", open);
  ui.menu.setAttribute("aria-expanded", String(open));
}

function newChat() {
  setDrawer(false);
  state.sessionId = null;
  clearNotice();
  ui.messages.replaceChildren(ui.welcome);
  showMessages(false);
  renderSessions();
  ui.input.focus();
}

async function allMessages(sessionId) {
  const items = [];
  for (;;) {
    const page = await api(
      "GET",
      `/sessions/${encodeURIComponent(sessionId)}/messages?limit=100&offset=${items.length}`,
    );
    items.push(...page.items);
    if (!page.items.length || items.length >= page.total) return items;
  }
}

async function openSession(sessionId, saved = null) {
  setDrawer(false);
  clearNotice();
  state.sessionId = sessionId;
  renderSessions();
  let messages;
  try {
    messages = await allMessages(sessionId);
  } catch (error) {
    notify(error.message);
    if (saved) forgetActive(saved.stream_id);
    return;
  }
  if (state.sessionId !== sessionId) return; // another one was opened meanwhile
  const views = new Map();
  const nodes = [ui.welcome];
  for (const message of messages) {
    if (message.role !== "user" && message.role !== "assistant") continue;
    const view = viewForStored(message);
    views.set(message.id, view);
    nodes.push(view.root);
  }
  ui.messages.replaceChildren(...nodes);
  showMessages(nodes.length > 1);

  // An answer still streaming in this tab keeps its live view.
  const live = state.turn;
  if (live && live.sessionId === sessionId && views.has(live.messageId)) {
    views.get(live.messageId).root.replaceWith(live.view.root);
  }
  if (saved) {
    const stored = messages.find((message) => message.id === saved.message_id);
    if (stored && stored.status !== "streaming") {
      forgetActive(saved.stream_id); // it ended while the page was away: stored as it is
    } else {
      const view = new MessageView("assistant", saved.message_id);
      const turn = Turn.restore(saved, view);
      const old = views.get(saved.message_id);
      if (old) old.root.replaceWith(view.root);
      else ui.messages.append(view.root);
      showMessages(true);
      state.turn = turn;
      setBusy(true);
      turn.resume();
    }
  }
  scrollToBottom();
}

// --------------------------------------------------------------------------------------------
// Documents: one item per document (an upload of a file already listed replaces its item),
// with re-index and delete; the collections "Use my documents" searches are picked below.

function documentItem() {
  const item = el("li", null, "document");
  const name = el("span", null, "name");
  const where = el("span", null, "collection muted");
  const progress = el("progress");
  progress.max = 1;
  const status = el("span", null, "state");
  const actions = el("span", null, "actions");
  const reindex = el("button", "Re-index", "link small reindex");
  reindex.type = "button";
  const remove = el("button", "Delete", "link small delete");
  remove.type = "button";
  actions.append(reindex, remove);
  item.append(name, where, progress, status, actions);
  const view = {
    item,
    doc: null,
    token: 0, // bumped to stop the polling of an earlier follow()
    update(doc) {
      view.doc = doc;
      item.dataset.documentId = doc.id || "";
      item.dataset.status = doc.status || "";
      item.className = `document ${doc.status || ""}`;
      name.textContent = doc.name || "document";
      const collection = state.collections.find((c) => c.id === doc.collection_id);
      where.textContent = collection ? `in ${collection.name}` : "";
      const fraction = Math.max(0, Math.min(1, Number(doc.progress) || 0));
      progress.value = fraction;
      progress.hidden = doc.status === "ready" || doc.status === "failed";
      const pages = Number.isInteger(doc.pages) ? ` · ${doc.pages} page${doc.pages === 1 ? "" : "s"}` : "";
      const words = {
        queued: "Waiting to be read…",
        processing: `Reading… ${Math.round(fraction * 100)}%`,
        ready: `Ready · ${doc.chunk_count} passage${doc.chunk_count === 1 ? "" : "s"}${pages}`,
        failed: `Failed: ${doc.error || "the file could not be read"}`,
      };
      status.textContent = words[doc.status] || doc.status || "";
      const busy = doc.status === "queued" || doc.status === "processing";
      actions.hidden = !doc.id;
      reindex.disabled = busy;
    },
    fail(message) {
      item.className = "document failed";
      item.dataset.status = "failed";
      progress.hidden = true;
      status.textContent = message;
    },
  };
  reindex.addEventListener("click", () => reindexDocument(view));
  remove.addEventListener("click", () => deleteDocument(view));
  return view;
}

// The item shows this document from now on; another item of the same document goes away.
function adopt(view, doc) {
  const other = state.documents.get(doc.id);
  if (other && other !== view) {
    other.token += 1;
    other.item.remove();
  }
  state.documents.set(doc.id, view);
}

function forgetDocument(view) {
  view.token += 1;
  view.item.remove();
  if (view.doc && state.documents.get(view.doc.id) === view) state.documents.delete(view.doc.id);
}

async function follow(view, doc) {
  const token = ++view.token;
  view.update(doc);
  while (doc.status === "queued" || doc.status === "processing") {
    await sleep(POLL_MS);
    if (view.token !== token) return;
    try {
      doc = await api("GET", `/documents/${encodeURIComponent(doc.id)}`);
    } catch (error) {
      if (view.token !== token) return;
      if (error.status === 404) forgetDocument(view); // deleted elsewhere
      else view.fail(error.message);
      return;
    }
    if (view.token !== token) return;
    view.update(doc);
  }
  if (doc.status === "ready") refreshCollections();
}

// The item of a document already listed under this name in this collection, if any: an
// upload under the same name updates or replaces that document, so it keeps one item.
function listedAs(name, collection) {
  const found = state.collections.find((c) => c.name === collection || c.id === collection);
  if (!found) return null;
  for (const view of state.documents.values()) {
    if (view.doc && view.doc.name === name && view.doc.collection_id === found.id) return view;
  }
  return null;
}

async function uploadDocument(file, collection) {
  const view = listedAs(file.name, collection) || documentItem();
  view.token += 1; // an earlier follow() of this item stops
  view.update({ ...(view.doc || {}), name: file.name, status: "queued", progress: 0 });
  ui.documents.prepend(view.item);
  try {
    const known = state.collections.some((c) => c.name === collection || c.id === collection);
    if (!known) {
      try {
        await api("POST", "/collections", { name: collection });
      } catch (error) {
        if (error.status !== 409) throw error; // 409: it exists already, which is fine
      }
    }
    const form = new FormData();
    form.append("collection", collection);
    form.append("file", file, file.name);
    const doc = await api("POST", "/documents", form);
    adopt(view, doc);
    await refreshCollections();
    await follow(view, doc);
  } catch (error) {
    view.fail(error.message);
  }
}

async function deleteDocument(view) {
  const doc = view.doc;
  if (!doc || !doc.id) return;
  if (!confirm(`Delete \u201c${doc.name}\u201d and its passages?`)) return;
  try {
    await api("DELETE", `/documents/${encodeURIComponent(doc.id)}`);
  } catch (error) {
    if (error.status !== 404) {
      notify(error.message);
      return;
    }
  }
  forgetDocument(view);
  await refreshCollections();
}

async function reindexDocument(view) {
  const doc = view.doc;
  if (!doc || !doc.id) return;
  try {
    await follow(view, await api("POST", `/documents/${encodeURIComponent(doc.id)}/reindex`));
  } catch (error) {
    notify(error.message);
  }
}

async function loadDocuments() {
  try {
    const page = await api("GET", "/documents?limit=20");
    for (const view of state.documents.values()) view.token += 1;
    state.documents.clear();
    const items = [];
    for (const doc of page.items) {
      const view = documentItem();
      state.documents.set(doc.id, view);
      items.push(view.item);
      follow(view, doc);
    }
    ui.documents.replaceChildren(...items);
  } catch (error) {
    notify(error.message);
  }
}

function readUnpicked() {
  try {
    const saved = JSON.parse(localStorage.getItem(UNPICKED_KEY) || "[]");
    return new Set(Array.isArray(saved) ? saved.filter((id) => typeof id === "string") : []);
  } catch {
    return new Set();
  }
}

function saveUnpicked() {
  try {
    localStorage.setItem(UNPICKED_KEY, JSON.stringify([...state.unpicked]));
  } catch {
    // Storage disabled: the choice lasts until the page is reloaded.
  }
}

function pickedCollections() {
  return state.collections.filter((c) => !state.unpicked.has(c.id)).map((c) => c.id);
}

async function refreshCollections() {
  try {
    const page = await api("GET", "/collections?limit=100");
    state.collections = page.items;
  } catch (error) {
    notify(error.message);
    return;
  }
  renderCollections();
  for (const view of state.documents.values()) if (view.doc) view.update(view.doc);
}

function renderCollections() {
  const legend = ui.picks.querySelector("legend");
  const picks = state.collections.map((collection) => {
    const label = el("label", null, "pick");
    const box = el("input");
    box.type = "checkbox";
    box.value = collection.id;
    box.dataset.name = collection.name;
    box.checked = !state.unpicked.has(collection.id);
    box.addEventListener("change", () => {
      if (box.checked) state.unpicked.delete(collection.id);
      else state.unpicked.add(collection.id);
      saveUnpicked();
      showScope();
    });
    const count = collection.document_count;
    label.append(
      box,
      el("span", collection.name, "name"),
      el("span", `${count} document${count === 1 ? "" : "s"}`, "count muted"),
    );
    return label;
  });
  ui.picks.replaceChildren(legend, ...picks, ui.picksEmpty);
  ui.picksEmpty.hidden = picks.length > 0;
  showScope();
}

// Next to the toggle: which collections an answer will search.
function showScope() {
  const total = state.collections.length;
  const picked = pickedCollections().length;
  ui.ragScope.textContent = !total || picked === total ? "all collections" : `${picked} of ${total} collections`;
}

// --------------------------------------------------------------------------------------------
// A cited passage, opened in its document's text: the passage highlighted, pages marked.

// Around the passage of a long document, this many characters each side are shown.
const CONTEXT_CHARS = 20000;

function pageAt(starts, offset) {
  let page = null;
  starts.forEach((start, index) => {
    if (start <= offset) page = index + 1;
  });
  return page;
}

async function openPassage(source) {
  let doc;
  try {
    doc = await api("GET", `/documents/${encodeURIComponent(source.document_id)}/text?chunks=false`);
  } catch (error) {
    notify(error.message);
    return;
  }
  const text = typeof doc.text === "string" ? doc.text : "";
  const starts = Array.isArray(doc.page_starts) ? doc.page_starts.filter(Number.isInteger) : [];
  const start = Math.max(0, Math.min(text.length, source.start));
  const end = Math.max(start, Math.min(text.length, source.end));
  let from = 0;
  let to = text.length;
  if (text.length > 3 * CONTEXT_CHARS) {
    from = Math.max(0, start - CONTEXT_CHARS);
    to = Math.min(text.length, end + CONTEXT_CHARS);
  }
  const cuts = new Set([from, to, start, end]);
  for (const at of starts) if (at > from && at < to) cuts.add(at);
  const points = [...cuts].sort((a, b) => a - b);
  const nodes = [];
  if (from > 0) nodes.push(el("span", "…\n", "elided muted"));
  for (let i = 0; i < points.length - 1; i++) {
    const a = points[i];
    const b = points[i + 1];
    starts.forEach((at, index) => {
      if (at === a && (a > from || a === 0)) nodes.push(el("span", `Page ${index + 1}`, "page-break"));
    });
    if (a === b) continue;
    const piece = text.slice(a, b);
    nodes.push(a >= start && b <= end ? el("mark", piece, "passage") : document.createTextNode(piece));
  }
  if (to < text.length) nodes.push(el("span", "\n…", "elided muted"));
  const page = Number.isInteger(source.page) ? source.page : pageAt(starts, start);
  ui.viewerTitle.textContent = doc.name || source.document_name || "Document";
  const where = `characters ${start}–${end}`;
  ui.viewerWhere.textContent = page === null ? `The passage: ${where}` : `Page ${page} · ${where}`;
  ui.viewerText.replaceChildren(...nodes);
  if (!ui.viewer.open) ui.viewer.showModal();
  const mark = ui.viewerText.querySelector("mark");
  if (mark) mark.scrollIntoView({ block: "center" });
}

// --------------------------------------------------------------------------------------------
// Pickers

async function loadPickers() {
  try {
    const models = await api("GET", "/v1/models");
    for (const model of models.data || []) {
      const option = el("option", model.id);
      option.value = model.id;
      ui.model.append(option);
    }
  } catch (error) {
    notify(`Models could not be listed: ${error.message}`);
  }
  try {
    const templates = await api("GET", "/templates?limit=100");
    for (const template of templates.items || []) {
      if (template.name === "default") continue; // the "Default" choice already
      const label = template.description ? `${template.name} — ${template.description}` : template.name;
      const option = el("option", label);
      option.value = template.name;
      ui.template.append(option);
    }
  } catch (error) {
    notify(`Templates could not be listed: ${error.message}`);
  }
}

// --------------------------------------------------------------------------------------------
// Wiring

function wire() {
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = ui.input.value;
    if (!message.trim() || state.turn) return;
    if (ui.rag.checked && state.collections.length && !pickedCollections().length) {
      notify("Pick at least one collection for \u201cUse my documents\u201d, or turn it off.");
      return;
    }
    ui.input.value = "";
    send(message);
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.stop.addEventListener("click", () => {
    if (state.turn) state.turn.stop();
  });
  ui.newChat.addEventListener("click", newChat);
  ui.menu.addEventListener("click", () => {
    setDrawer(!document.body.classList.contains("drawer-open"));
  });
  ui.chat.addEventListener("click", (event) => {
    if (document.body.classList.contains("drawer-open") && event.target !== ui.menu) {
      setDrawer(false);
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") setDrawer(false);
  });
  ui.key.value = apiKey();
  ui.keyState.textContent = apiKey() ? "A key is saved in this browser." : "";
  ui.keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = ui.key.value.trim();
    try {
      if (key) localStorage.setItem(API_KEY, key);
      else localStorage.removeItem(API_KEY);
    } catch {
      notify("This browser does not let the page keep the key.");
      return;
    }
    ui.keyState.textContent = key ? "A key is saved in this browser." : "No key.";
    clearNotice();
    await Promise.all([refreshSessions(), loadPickers(), refreshCollections(), loadDocuments()]);
  });
  ui.noticeClose.addEventListener("click", clearNotice);
  ui.viewerClose.addEventListener("click", () => ui.viewer.close());
  ui.viewer.addEventListener("click", (event) => {
    if (event.target === ui.viewer) ui.viewer.close(); // a click on the backdrop
  });
  ui.uploadForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = ui.file.files && ui.file.files[0];
    if (!file) return;
    uploadDocument(file, ui.collection.value.trim());
    ui.file.value = "";
  });
  // A reload aborts the fetch: that is not a broken connection to recover from here, the
  // next page resumes the stream from sessionStorage.
  window.addEventListener("pagehide", () => {
    state.unloading = true;
  });
}

async function start() {
  wire();
  const saved = readActive();
  await Promise.all([refreshSessions(), loadPickers(), refreshCollections(), loadDocuments()]);
  if (saved) await openSession(saved.session_id, saved);
  document.body.dataset.ready = "true";
}

start();
