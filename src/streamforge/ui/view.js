import { el, nearBottom, scrollToBottom, state, ui } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

// What a message's buttons do, set by the page: send a question again, open a cited passage.
export const viewHooks = {
  send: (_question) => {},
  openPassage: (_source) => {},
};

// One message on the page

const STATUS_WORDS = {
  streaming: "still being written",
  cancelled: "stopped",
  interrupted: "interrupted",
  failed: "failed",
};

export class MessageView {
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
      viewHooks.send(question);
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

export function citation(source, position) {
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
    open.addEventListener("click", () => viewHooks.openPassage(source));
    details.append(open);
  }
  const item = el("li");
  item.append(details);
  return item;
}

export function errorWords(error) {
  if (!error || typeof error !== "object") return "The answer failed.";
  return typeof error.message === "string" && error.message
    ? error.message
    : `The answer failed (${error.code || "unknown error"}).`;
}

export function showMessages(present) {
  ui.welcome.hidden = present;
}

export function viewForStored(message) {
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
