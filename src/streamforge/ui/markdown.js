import { el } from "./dom.js";

// Markdown, rendered into DOM nodes. A deliberately small dialect: paragraphs, line breaks,
// headings, fenced and inline code, bold, italic, bullet and numbered lists (nested by
// indentation), block quotes, rules and links (http and https only). Anything else stays
// text. An unfinished construct (a fence still open while the answer streams) renders as far
// as it goes.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:\s+(.*))?$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LINK = /^\[([^\[\]\n]+)\]\(\s*<?([^\s()<>]+)>?(?:\s+"[^"\n]*")?\s*\)/;
const BARE_URL = /^https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]}]/i;
const ESCAPABLE = /[\\`*_{}\[\]()#+\-.!>~|]/;
const WORD = /[\p{L}\p{N}]/u;

function isBlank(line) {
  return /^\s*$/.test(line);
}

function startsBlock(line) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    (LIST_ITEM.test(line) && LIST_ITEM.exec(line)[3] !== undefined)
  );
}

export function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  renderBlocks(source.replace(/\r\n?/g, "\n").split("\n"), root);
  return root;
}

function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let match;
    if (isBlank(line)) {
      i++;
    } else if ((match = FENCE.exec(line))) {
      const fence = match[1];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++; // the closing fence (or past the end while it is still streaming)
      const pre = el("pre");
      const code = el("code", body.join("\n"));
      if (match[2]) code.dataset.language = match[2];
      pre.append(code);
      parent.append(pre);
    } else if ((match = HEADING.exec(line))) {
      const heading = el(`h${match[1].length}`);
      renderInline((match[2] || "").replace(/\s+#+$/, ""), heading, false);
      parent.append(heading);
      i++;
    } else if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
    } else if (LIST_ITEM.test(line) && LIST_ITEM.exec(line)[3] !== undefined) {
      i = renderList(lines, i, parent);
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (match = QUOTE.exec(lines[i]))) {
        inner.push(match[1]);
        i++;
      }
      const quote = el("blockquote");
      renderBlocks(inner, quote);
      parent.append(quote);
    } else {
      const paragraph = el("p");
      renderInline(line.trim(), paragraph, false);
      i++;
      while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i])) {
        paragraph.append(el("br"));
        renderInline(lines[i].trim(), paragraph, false);
        i++;
      }
      parent.append(paragraph);
    }
  }
}

function renderList(lines, start, parent) {
  const first = LIST_ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const number = parseInt(first[2], 10);
    if (number !== 1) list.start = number;
  }
  let item = null;
  let i = start;
  while (i < lines.length) {
    const line = lines[i];
    const match = LIST_ITEM.exec(line);
    if (match && match[3] !== undefined) {
      const depth = match[1].length;
      if (depth >= indent + 2 && item) {
        i = renderList(lines, i, item);
        continue;
      }
      if (depth < indent || /\d/.test(match[2]) !== ordered) break;
      item = el("li");
      renderInline(match[3], item, false);
      list.append(item);
      i++;
    } else if (isBlank(line)) {
      // A blank line ends the list unless another item of it (or a nested one) follows.
      let next = i + 1;
      while (next < lines.length && isBlank(lines[next])) next++;
      const after = next < lines.length ? LIST_ITEM.exec(lines[next]) : null;
      const continues =
        after &&
        after[3] !== undefined &&
        after[1].length >= indent &&
        (after[1].length >= indent + 2 || /\d/.test(after[2]) === ordered);
      if (!continues) break;
      i = next;
    } else if (item && /^\s+\S/.test(line) && !startsBlock(line.trim())) {
      item.append(el("br"));
      renderInline(line.trim(), item, false);
      i++;
    } else {
      break;
    }
  }
  parent.append(list);
  return i;
}

function safeUrl(raw) {
  try {
    const url = new URL(raw);
    if (url.protocol === "http:" || url.protocol === "https:") return url.href;
  } catch {
    // Not an absolute URL: not a link.
  }
  return null;
}

function link(url, parent) {
  const anchor = el("a");
  anchor.href = url;
  anchor.rel = "noopener noreferrer";
  anchor.target = "_blank";
  parent.append(anchor);
  return anchor;
}

// The end of an emphasis opened with `delim` at `from`, or -1.
function closing(text, from, delim) {
  const mark = delim[0];
  for (let j = from; j < text.length; j++) {
    if (text[j] === "`") {
      // Skip code spans: emphasis does not close inside them.
      const end = text.indexOf("`", j + 1);
      if (end === -1) return -1;
      j = end;
      continue;
    }
    if (!text.startsWith(delim, j)) continue;
    if (delim.length === 1 && text[j + 1] === mark) {
      j++; // part of a double delimiter
      continue;
    }
    if (j === from || /\s/.test(text[j - 1])) continue;
    if (mark === "_" && WORD.test(text[j + delim.length] || "")) continue;
    return j;
  }
  return -1;
}

function renderInline(text, parent, inLink) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && ESCAPABLE.test(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      let run = 1;
      while (text[i + run] === "`") run++;
      const fence = "`".repeat(run);
      const end = text.indexOf(fence, i + run);
      if (end !== -1) {
        flush();
        let code = text.slice(i + run, end);
        if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
        parent.append(el("code", code));
        i = end + run;
      } else {
        buffer += fence;
        i += run;
      }
      continue;
    }
    if (c === "[" && !inLink) {
      const match = LINK.exec(text.slice(i));
      if (match) {
        const url = safeUrl(match[2]);
        if (url) {
          flush();
          renderInline(match[1], link(url, parent), true);
        } else {
          buffer += match[0]; // not http(s): shown as the text it is
        }
        i += match[0].length;
        continue;
      }
    }
    if ((c === "h" || c === "H") && !inLink && !WORD.test(text[i - 1] || "")) {
      const match = BARE_URL.exec(text.slice(i));
      const url = match && safeUrl(match[0]);
      if (url) {
        flush();
        link(url, parent).textContent = match[0];
        i += match[0].length;
        continue;
      }
    }
    if (c === "*" || c === "_") {
      const delim = text[i + 1] === c ? c + c : c;
      const next = text[i + delim.length] || "";
      const opens = next !== "" && !/\s/.test(next) && !(c === "_" && WORD.test(text[i - 1] || ""));
      const end = opens ? closing(text, i + delim.length, delim) : -1;
      if (end !== -1) {
        flush();
        const node = el(delim.length === 2 ? "strong" : "em");
        renderInline(text.slice(i + delim.length, end), node, inLink);
        parent.append(node);
        i = end + delim.length;
      } else {
        buffer += delim;
        i += delim.length;
      }
      continue;
    }
    buffer += c;
    i++;
  }
  flush();
}
