// StreamForge chat page. Plain browser JavaScript: no build step, no dependencies, nothing
// fetched from anywhere but this server.
//
// The page is ES modules served as they are: dom (elements, state, helpers), http (calls to
// the server), sse (the event-stream parser), markdown (answers into DOM nodes), view (one
// message), turn (a streamed answer), composer (the message box, its pickers, sending),
// sessions (the conversations, the drawer), documents (uploads and their progress),
// collections (what "Use my documents" searches), passage (a cited passage in its document),
// key (the API key prompt) and this one, which wires them together and starts the page.
//
// Safety rule for the whole page: text that comes from the server (answers, titles,
// snippets, file names, error messages) only ever reaches the page through textContent,
// createTextNode or attribute properties checked first (links: http and https only). Nothing
// is parsed as HTML.

import { clearNotice, state, ui } from "./dom.js";
import { viewHooks } from "./view.js";
import { readActive, turnHooks } from "./turn.js";
import { loadPickers, send, wireComposer } from "./composer.js";
import { openSession, refreshSessions, wireSessions } from "./sessions.js";
import { loadDocuments, wireDocuments } from "./documents.js";
import { readUnpicked, refreshCollections } from "./collections.js";
import { openPassage, wirePassage } from "./passage.js";
import { wireKey } from "./key.js";

// Everything the page lists, fetched (again) from the server.
function loadAll() {
  return Promise.all([refreshSessions(), loadPickers(), refreshCollections(), loadDocuments()]);
}

function wire() {
  wireComposer();
  wireSessions();
  wireKey(loadAll);
  ui.noticeClose.addEventListener("click", clearNotice);
  wirePassage();
  wireDocuments();
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
  await loadAll();
  if (saved) await openSession(saved.session_id, saved);
  document.body.dataset.ready = "true";
}

start();
