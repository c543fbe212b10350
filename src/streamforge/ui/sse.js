// Server-Sent Events over a fetch() body, parsed by the WHATWG rules: lines end at CRLF, LF
// or CR; a blank line dispatches; "data" lines are joined with "\n"; ":" starts a comment;
// "id" sets the last event id (kept across events).

export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.lastEventId = "";
    this.reset();
  }

  reset() {
    this.data = [];
    this.hasData = false;
    this.type = "";
    this.hasId = false;
  }

  push(text) {
    this.buffer += text;
    let start = 0;
    for (;;) {
      let end = start;
      const length = this.buffer.length;
      while (end < length && this.buffer[end] !== "\n" && this.buffer[end] !== "\r") end++;
      if (end >= length) break;
      // A CR at the very end may be the first half of a CRLF split across two chunks.
      if (this.buffer[end] === "\r" && end + 1 >= length) break;
      const line = this.buffer.slice(start, end);
      start = end + (this.buffer[end] === "\r" && this.buffer[end + 1] === "\n" ? 2 : 1);
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.hasData) {
        this.onEvent({
          type: this.type || "message",
          data: this.data.join("\n"),
          id: this.lastEventId,
          hasId: this.hasId,
        });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "event") {
      this.type = value;
    } else if (field === "id" && !value.includes("\0")) {
      this.lastEventId = value;
      this.hasId = true;
    }
  }
}
