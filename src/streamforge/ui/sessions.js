// The conversations in the sidebar: list, open (with an answer still streaming picked up),
// rename, delete, start a new one; on a narrow screen the sidebar is a drawer.

import { clearNotice, el, notify, scrollToBottom, state, ui } from "./dom.js";
import { allMessages, api } from "./http.js";
import { MessageView, showMessages, viewForStored } from "./view.js";
import { Turn, forgetActive, setBusy } from "./turn.js";

export async function refreshSessions() {
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

export async function openSession(sessionId, saved = null) {
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

export function wireSessions() {
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
}
