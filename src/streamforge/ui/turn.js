import { notify, state, ui } from "./dom.js";
import { BASE, allMessages, api, apiKey, errorFrom, withKey } from "./http.js";
import { SSEParser } from "./sse.js";
import { errorWords } from "./view.js";

// The answer being streamed, kept per tab so that a reload can pick it up where it was.
export const ACTIVE_KEY = "streamforge.activeStream";

// What the page does when an answer starts a conversation or ends (its list changed).
export const turnHooks = {
  sessionsChanged: () => {},
};

// A streamed answer: fed by the POST /chat body, or by an EventSource after a reload

export class Turn {
  constructor(view, question = null) {
    this.view = view;
    this.question = question;
    this.text = "";
    this.sources = [];
    this.error = null;
    this.streamId = null;
    this.sessionId = null;
    this.messageId = null;
    this.lastEventId = "";
    this.finished = false;
    this.stopRequested = false;
    this.source = null; // the EventSource of a resumed stream
    view.setStreaming(true);
  }

  static restore(saved, view) {
    const turn = new Turn(view);
    turn.streamId = saved.stream_id;
    turn.sessionId = saved.session_id;
    turn.messageId = saved.message_id;
    turn.lastEventId = saved.last_event_id || "";
    turn.text = typeof saved.text === "string" ? saved.text : "";
    turn.sources = saved.sources || [];
    view.setMarkdown(turn.text);
    view.setCitations(turn.sources);
    view.setStatus("");
    return turn;
  }

  handle(type, data, id) {
    if (this.finished) return;
    if (id) this.lastEventId = id;
    let payload = null;
    if (type !== "message") {
      try {
        payload = JSON.parse(data);
      } catch {
        payload = null;
      }
    }
    switch (type) {
      case "session":
        if (payload) this.started(payload);
        break;
      case "sources":
        this.sources = (payload && payload.sources) || [];
        this.view.setCitations(this.sources);
        break;
      case "message":
        this.text += data;
        if (this.error && this.error.retryable) this.clearError();
        this.view.scheduleMarkdown(this.text);
        break;
      case "error":
        this.error = payload || { message: "The answer failed." };
        // Only a resume that could not reach the event log is tried again by itself; any
        // other error is followed by `done`, and the answer is over.
        this.view.setError(
          this.error.code === "event_log_unavailable"
            ? `${errorWords(this.error)} Reconnecting…`
            : errorWords(this.error),
        );
        break;
      case "done":
        this.finish(payload || {});
        return;
      default:
        break; // usage and any future event: nothing to show
    }
    this.save();
  }

  started(payload) {
    this.streamId = payload.stream_id;
    this.messageId = payload.assistant_message_id || this.messageId;
    this.view.root.dataset.messageId = this.messageId || "";
    const fresh = this.sessionId === null && state.sessionId !== payload.session_id;
    this.sessionId = payload.session_id;
    if (fresh && state.turn === this) {
      state.sessionId = payload.session_id;
      turnHooks.sessionsChanged();
    }
    if (this.stopRequested) this.stop();
  }

  clearError() {
    this.error = null;
    this.view.setError("");
  }

  save() {
    if (this.finished || !this.streamId) return;
    const saved = {
      stream_id: this.streamId,
      session_id: this.sessionId,
      message_id: this.messageId,
      last_event_id: this.lastEventId,
      text: this.text,
      sources: this.sources,
    };
    try {
      // Text and event id in one write: after a reload they always match.
      sessionStorage.setItem(ACTIVE_KEY, JSON.stringify(saved));
    } catch {
      // Storage full or disabled: a reload then loses the stream, nothing else.
    }
  }

  finish(done) {
    this.finished = true;
    if (this.source) this.source.close();
    this.view.setMarkdown(this.text);
    this.view.setStreaming(false);
    this.view.setStatus(done.status || "completed");
    if (done.status === "failed" && !this.error) this.view.setError("The answer failed.");
    if (this.error && this.error.retryable && done.status === "completed") this.clearError();
    if (this.error && done.status !== "completed") this.view.setError(errorWords(this.error));
    if (done.status === "failed" || done.status === "interrupted") {
      this.view.offerRetry(this.question);
    }
    this.release();
    turnHooks.sessionsChanged();
  }

  fail(message) {
    this.finished = true;
    if (this.source) this.source.close();
    this.view.setStreaming(false);
    this.view.setError(message);
    this.view.offerRetry(this.question);
    this.release();
  }

  release() {
    forgetActive(this.streamId);
    if (state.turn === this) {
      state.turn = null;
      setBusy(false);
    }
  }

  async stop() {
    if (!this.streamId) {
      this.stopRequested = true; // the session event, with the stream id, comes first
      return;
    }
    ui.stop.disabled = true;
    try {
      await api("POST", `/chat/streams/${encodeURIComponent(this.streamId)}/cancel`);
    } catch (error) {
      notify(error.message);
    } finally {
      ui.stop.disabled = false;
    }
  }

  // Follow the stream with the browser's EventSource from the last event seen: the server
  // replays exactly the events after it, then the live ones; EventSource reconnects by itself
  // (sending Last-Event-ID) if the connection drops, and a 204 means nothing more will come.
  resume() {
    if (this.source) this.source.close();
    // EventSource cannot send an Authorization header: with a key, follow over fetch().
    if (apiKey()) {
      this.follow();
      return;
    }
    const url =
      `${BASE}/chat/streams/${encodeURIComponent(this.streamId)}` +
      `?last_event_id=${encodeURIComponent(this.lastEventId || "0")}`;
    const source = new EventSource(url);
    this.source = source;
    for (const type of ["session", "sources", "message", "usage", "done"]) {
      source.addEventListener(type, (event) => this.handle(type, event.data, event.lastEventId));
    }
    source.addEventListener("error", (event) => {
      if (event instanceof MessageEvent) {
        this.handle("error", event.data, event.lastEventId);
      } else if (source.readyState === EventSource.CLOSED && !this.finished) {
        this.settle();
      }
    });
  }

  // The same as resume(), over fetch() with the key: reconnect from the last event seen
  // until the stream ends, as EventSource would.
  async follow() {
    while (!this.finished && !state.unloading) {
      let response;
      try {
        response = await fetch(
          `${BASE}/chat/streams/${encodeURIComponent(this.streamId)}`,
          {
            headers: withKey({
              Accept: "text/event-stream",
              "Last-Event-ID": String(this.lastEventId || "0"),
            }),
          },
        );
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      if (response.status === 204) {
        await this.settle();
        return;
      }
      if (!response.ok || !response.body) {
        this.fail((await errorFrom(response)).message);
        return;
      }
      // A broken connection: go round again from the last event that arrived.
      await this.consume(response);
      if (!this.finished) await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  // Read an event-stream body to its end, handling each event; false if the connection broke.
  async consume(response) {
    const parser = new SSEParser((event) => this.handle(event.type, event.data, event.id));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
      parser.push(decoder.decode());
      return true;
    } catch {
      return false;
    }
  }

  // The stream has nothing more to give (expired, or a 204): show what was stored.
  async settle() {
    if (this.source) this.source.close();
    try {
      const messages = await allMessages(this.sessionId);
      const stored = messages.find((message) => message.id === this.messageId);
      if (stored && stored.status !== "streaming") {
        this.text = stored.content;
        this.sources = stored.citations || this.sources;
        this.view.setCitations(this.sources);
        if (stored.error) this.error = stored.error;
        if (stored.error) this.view.setError(errorWords(stored.error));
        this.finish({ status: stored.status });
        return;
      }
    } catch (error) {
      notify(error.message);
    }
    this.fail("The rest of this answer is no longer available.");
  }
}

export function readActive() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(ACTIVE_KEY) || "null");
    if (saved && typeof saved.stream_id === "string" && typeof saved.session_id === "string") {
      return saved;
    }
  } catch {
    // Unreadable: forget it.
  }
  sessionStorage.removeItem(ACTIVE_KEY);
  return null;
}

export function forgetActive(streamId) {
  const saved = readActive();
  if (saved && (!streamId || saved.stream_id === streamId)) sessionStorage.removeItem(ACTIVE_KEY);
}

export function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.hidden = !busy;
  ui.stop.disabled = false;
}
