// Parses a UI message stream's bytes the way the AI SDK's chat client does: its own
// parseJsonEventStream (with uiMessageChunkSchema) turns the bytes into chunks, its own
// readUIMessageStream assembles the message. The SSE fields themselves (the ids a reconnect
// sends as Last-Event-ID) come from eventsource-parser, the SSE parser the AI SDK uses.
//
// node ui_stream_parse.mjs <chunk size> < bytes; prints one JSON object on stdout.
// The bytes are fed in pieces of <chunk size> bytes, so multi-byte characters and lines are
// split across reads as a network may split them.
import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from 'ai';
import { EventSourceParserStream } from 'eventsource-parser/stream';

const size = Number(process.argv[2] ?? 7);
const input = [];
for await (const piece of process.stdin) input.push(piece);
const bytes = new Uint8Array(Buffer.concat(input));

function body() {
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(offset, offset + size));
      offset += size;
    },
  });
}

// The SSE events as the parser sees them: id, event name and data.
const events = [];
const sse = body().pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
for await (const event of sse) {
  events.push({ id: event.id ?? null, event: event.event ?? null, data: event.data });
}

// The chunks, validated against the AI SDK's schema, and the message they assemble into.
const chunks = [];
const invalid = [];
const parsed = parseJsonEventStream({ stream: body(), schema: uiMessageChunkSchema }).pipeThrough(
  new TransformStream({
    transform(result, controller) {
      if (!result.success) {
        invalid.push(String(result.error?.message ?? result.error));
        return;
      }
      chunks.push(result.value);
      controller.enqueue(result.value);
    },
  }),
);
const errors = [];
let message = null;
for await (const snapshot of readUIMessageStream({
  stream: parsed,
  onError: error => errors.push(String(error?.message ?? error)),
})) {
  message = snapshot;
}
process.stdout.write(JSON.stringify({ events, chunks, invalid, errors, message }) + '\n');
