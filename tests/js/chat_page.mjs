// A chat page built on the AI SDK's own framework-free chat client (AbstractChat, the class
// useChat wraps) and its DefaultChatTransport, the way an app would use it against StreamForge.
// Bundled by esbuild at test time (tests/test_ai_sdk_browser.py); it fetches nothing but
// StreamForge, on the page's own origin.
//
// The chat id and the messages survive a reload (localStorage); on load the page does what
// useChat({ resume: true }) does: chat.resumeStream() reattaches to an answer in progress.
import { AbstractChat, DefaultChatTransport } from 'ai';

const STORE = 'streamforge-ai-sdk-chat';

// The state useChat keeps in React, kept here in plain fields; every change re-renders.
class PageState {
  constructor(messages, onChange) {
    this.status = 'ready';
    this.error = undefined;
    this.messages = messages;
    this.onChange = onChange;
  }

  pushMessage(message) {
    this.messages = this.messages.concat(message);
    this.onChange();
  }

  popMessage() {
    this.messages = this.messages.slice(0, -1);
    this.onChange();
  }

  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
    this.onChange();
  }

  snapshot(thing) {
    return structuredClone(thing);
  }
}

class PageChat extends AbstractChat {
  constructor({ messages, onChange, ...init }) {
    const state = new PageState(messages, onChange);
    super({ ...init, state });
    this.pageState = state;
  }

  setStatus(update) {
    super.setStatus(update);
    this.pageState.onChange();
  }
}

function restore() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE) ?? 'null');
    if (saved && typeof saved.id === 'string' && Array.isArray(saved.messages)) return saved;
  } catch {
    // A broken entry starts a new chat.
  }
  return { id: crypto.randomUUID(), messages: [] };
}

const list = document.getElementById('messages');
const form = document.getElementById('composer');
const input = document.getElementById('input');

function textOf(message) {
  return message.parts
    .filter(part => part.type === 'text')
    .map(part => part.text)
    .join('');
}

let chat = null;

function render() {
  if (chat === null) return;
  const messages = chat.messages;
  localStorage.setItem(STORE, JSON.stringify({ id: chat.id, messages }));
  const rows = messages.map(message => {
    const row = document.createElement('div');
    row.className = `message ${message.role}`;
    row.dataset.id = message.id;
    // StreamForge's ids arrive as message metadata.
    const session = message.metadata?.session_id;
    if (session) row.dataset.sessionId = session;
    const content = document.createElement('div');
    content.className = 'content';
    content.textContent = textOf(message);
    row.append(content);
    return row;
  });
  list.replaceChildren(...rows);
  document.body.dataset.status = chat.status;
  document.body.dataset.chatId = chat.id;
  document.getElementById('status').textContent = `chat ${chat.id} · ${chat.status}`;
  const error = chat.error;
  document.getElementById('error').textContent = error ? String(error.message ?? error) : '';
}

const saved = restore();
chat = new PageChat({
  id: saved.id,
  messages: saved.messages,
  onChange: render,
  transport: new DefaultChatTransport({ api: '/ai-sdk/chat' }),
});
render();

form.addEventListener('submit', event => {
  event.preventDefault();
  const text = input.value.trim();
  if (text === '') return;
  input.value = '';
  chat.sendMessage({ text });
});

// useChat({ resume: true }): on mount, reattach to the chat's answer in progress (204: none).
document.body.dataset.ready = 'true';
chat.resumeStream();
