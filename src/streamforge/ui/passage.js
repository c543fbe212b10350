// A cited passage, opened in its document's text: the passage highlighted, pages marked.

import { el, notify, ui } from "./dom.js";
import { api } from "./http.js";

// Around the passage of a long document, this many characters each side are shown.
const CONTEXT_CHARS = 20000;

function pageAt(starts, offset) {
  let page = null;
  starts.forEach((start, index) => {
    if (start <= offset) page = index + 1;
  });
  return page;
}

export async function openPassage(source) {
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

export function wirePassage() {
  ui.viewerClose.addEventListener("click", () => ui.viewer.close());
  ui.viewer.addEventListener("click", (event) => {
    if (event.target === ui.viewer) ui.viewer.close(); // a click on the backdrop
  });
}
