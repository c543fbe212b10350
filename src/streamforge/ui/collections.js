// The collections "Use my documents" searches: the boxes that pick them (the choice kept in
// this browser) and, next to the toggle, how many an answer will search.

import { el, notify, state, ui } from "./dom.js";
import { api } from "./http.js";

// The collections that "Use my documents" leaves out (ids), kept in this browser.
const UNPICKED_KEY = "streamforge.unpickedCollections";

export function readUnpicked() {
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

export function pickedCollections() {
  return state.collections.filter((c) => !state.unpicked.has(c.id)).map((c) => c.id);
}

export async function refreshCollections() {
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
