// Parses a plain StreamForge stream with the page's own SSEParser (src/streamforge/ui/sse.js),
// fed in pieces of <chunk size> bytes through a streaming TextDecoder, as the page reads a
// fetch() body.
//
// node sse_parse.mjs <chunk size> < bytes; prints {events: [{type, data, id, hasId}]}.
import { readFile } from 'node:fs/promises';

const source = await readFile(new URL('../../src/streamforge/ui/sse.js', import.meta.url), 'utf8');
const { SSEParser } = await import('data:text/javascript,' + encodeURIComponent(source));

const size = Number(process.argv[2] ?? 7);
const input = [];
for await (const piece of process.stdin) input.push(piece);
const bytes = new Uint8Array(Buffer.concat(input));

const events = [];
const parser = new SSEParser(event => events.push(event));
const decoder = new TextDecoder();
for (let offset = 0; offset < bytes.length; offset += size) {
  parser.push(decoder.decode(bytes.slice(offset, offset + size), { stream: true }));
}
parser.push(decoder.decode());
process.stdout.write(JSON.stringify({ events }) + '\n');
