// Talks to StreamForge the way useChat does: the AI SDK's own DefaultChatTransport sends the
// request and reconnects, the AI SDK's own readUIMessageStream assembles the message.
//
// node ai_sdk_chat.mjs '<plan as JSON>'; prints one JSON object on stdout.
// plan: {api, chatId, messages, trigger?, body?, headers?, cutAfterChars?, reconnect?}
//   cutAfterChars: abort the request once that much text has arrived (what stop() does);
//   reconnect: then call reconnectToStream and assemble what it yields.
import { DefaultChatTransport, readUIMessageStream } from 'ai';

const plan = JSON.parse(process.argv[2]);
const transport = new DefaultChatTransport({
  api: plan.api,
  headers: plan.headers ?? {},
  body: plan.body ?? {},
});

// The chunk types in arrival order, and the message the AI SDK assembles from them.
async function assemble(stream) {
  const types = [];
  const errors = [];
  const seen = new TransformStream({
    transform(chunk, controller) {
      types.push(chunk.type);
      controller.enqueue(chunk);
    },
  });
  let message = null;
  for await (const snapshot of readUIMessageStream({
    stream: stream.pipeThrough(seen),
    onError: error => errors.push(String(error?.message ?? error)),
  })) {
    message = snapshot;
  }
  return { message, types, errors };
}

const request = {
  chatId: plan.chatId,
  messages: plan.messages,
  trigger: plan.trigger ?? 'submit-message',
  messageId: undefined,
};

const out = {};
if (plan.cutAfterChars == null) {
  const stream = await transport.sendMessages({ ...request, abortSignal: undefined });
  Object.assign(out, await assemble(stream));
} else {
  const controller = new AbortController();
  const stream = await transport.sendMessages({ ...request, abortSignal: controller.signal });
  const reader = stream.getReader();
  const types = [];
  let text = '';
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    types.push(value.type);
    if (value.type === 'text-delta') {
      text += value.delta;
      if (text.length >= plan.cutAfterChars) break;
    }
  }
  controller.abort();
  await reader.cancel().catch(() => {});
  out.cut = { text, types };
  if (plan.reconnect) {
    const resumed = await transport.reconnectToStream({ chatId: plan.chatId });
    out.resumed = resumed === null ? null : await assemble(resumed);
  }
}
process.stdout.write(JSON.stringify(out) + '\n');
