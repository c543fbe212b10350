// The composer: the message box with its model and template pickers, sending a question and
// reading the streamed answer (resumed from the last event when the connection breaks).

import { clearNotice, el, notify, scrollToBottom, state, ui } from "./dom.js";
import { BASE, UNREACHABLE, api, errorFrom, withKey } from "./http.js";
import { MessageView, showMessages } from "./view.js";
import { Turn, setBusy } from "./turn.js";
import { pickedCollections } from "./collections.js";

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

export async function send(message) {
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

export async function loadPickers() {
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

export function wireComposer() {
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
}
