// The API key prompt, for a server with authentication on: the key is kept in this browser
// only (http.js sends it); saving another one reloads what the page shows with it.

import { clearNotice, notify, ui } from "./dom.js";
import { API_KEY, apiKey } from "./http.js";

// reload: fetches again everything the page lists (conversations, pickers, documents).
export function wireKey(reload) {
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
    await reload();
  });
}
