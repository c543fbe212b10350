// The documents panel: one item per document (an upload of a file already listed replaces its
// item) with its ingestion progress, re-index and delete.

import { el, notify, sleep, state, ui } from "./dom.js";
import { api } from "./http.js";
import { refreshCollections } from "./collections.js";

const POLL_MS = 500;

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

export async function loadDocuments() {
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

export function wireDocuments() {
  ui.uploadForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = ui.file.files && ui.file.files[0];
    if (!file) return;
    uploadDocument(file, ui.collection.value.trim());
    ui.file.value = "";
  });
}
