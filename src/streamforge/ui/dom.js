// The page's elements, its shared state and small DOM helpers.

export const $ = (id) => document.getElementById(id);
export const ui = {
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

// What the page is showing and doing; one object, shared by the modules.
export const state = {
  sessionId: null,
  sessions: [],
  turn: null, // the Turn being streamed, if any
  unloading: false,
  documents: new Map(), // document id → its item in the list (one per document)
  collections: [],
  unpicked: new Set(), // collection ids "Use my documents" leaves out
};

export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function notify(message) {
  ui.noticeText.textContent = message;
  ui.notice.hidden = false;
}

export function clearNotice() {
  ui.notice.hidden = true;
  ui.noticeText.textContent = "";
}

export function nearBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

export function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}
