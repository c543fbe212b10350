// StreamForge chat page. Plain browser JavaScript: no build step, no dependencies, nothing
// fetched from anywhere but this server.
//
// The page is ES modules served as they are: dom (elements, state, helpers), http (calls to
// the server), sse (the event-stream parser), markdown (answers into DOM nodes), view (one
// message), turn (a streamed answer) and this one, which wires sessions, documents, pickers
// and the passage viewer together.
//
// Safety rule for the whole page: text that comes from the server (answers, titles,
// snippets, file names, error messages) only ever reaches the page through textContent,
// createTextNode or attribute properties checked first (links: http and https only). Nothing
// is parsed as HTML.

import { clearNotice, el, notify, scrollToBottom, sleep, state, ui } from "./dom.js";
import { API_KEY, BASE, UNREACHABLE, allMessages, api, apiKey, errorFrom, withKey } from "./http.js";
import { MessageView, showMessages, viewForStored, viewHooks } from "./view.js";
import { Turn, forgetActive, readActive, setBusy, turnHooks } from "./turn.js";

// The collections that "Use my documents" leaves out (ids), kept in this browser.
const UNPICKED_KEY = "streamforge.unpickedCollections";
const POLL_MS = 500;

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
  viewHooks.send = send;
  viewHooks.openPassage = openPassage;
  turnHooks.sessionsChanged = refreshSessions;
  state.unpicked = readUnpicked();
  wire();
  const saved = readActive();
  await Promise.all([refreshSessions(), loadPickers(), refreshCollections(), loadDocuments()]);
  if (saved) await openSession(saved.session_id, saved);
  document.body.dataset.ready = "true";
}

start();

