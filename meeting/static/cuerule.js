// The cue rule: final captions to WebVTT, SRT and plain text, written in the page from its
// own view. It is captions/formats.py step for step (see that module's docstring for the
// rule); both pass the shared table tests/cue_cases.json, so change them together.
//
// Input: finals on one timeline, [{speaker, name, utterance, words: [{text, start, end}]}],
// times in seconds.

export const LINE_CHARS = 42;
export const MAX_LINES = 2;
export const MAX_CUE_SECONDS = 7;
export const MAX_GAP_SECONDS = 1.5;

const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const SPACES = / {2,}/g;
const ARROW = /-{2,}>/g;

/** One line of text: lone surrogates become U+FFFD, control characters and line breaks
 * spaces, runs of spaces one space, ends trimmed. */
export function clean(text) {
  return String(text).toWellFormed().replace(CONTROL, " ").replace(SPACES, " ").replace(/^ +| +$/g, "");
}

// Python counts and compares code points; JS strings are UTF-16 units.
const length = (text) => [...text].length;

function compareText(a, b) {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function compareNumbers(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The finals with names and words cleaned, those left with words, ordered by start. */
export function writtenFinals(finals) {
  const out = [];
  for (const final of finals) {
    const words = final.words
      .map((w) => ({ text: clean(w.text), start: Number(w.start), end: Number(w.end) }))
      .filter((w) => w.text);
    if (!words.length) continue;
    const speaker = String(final.speaker);
    out.push({ speaker, name: clean(final.name ?? "") || clean(speaker), utterance: Number(final.utterance), words });
  }
  // Array.prototype.sort is stable, like Python's sorted().
  return out.sort(
    (a, b) =>
      compareNumbers(a.words[0].start, b.words[0].start) ||
      compareText(a.speaker, b.speaker) ||
      compareNumbers(a.utterance, b.utterance),
  );
}

/** Cleaned words filled greedily into lines of at most `lineChars` characters, breaking
 * only between words; a single over-long word gets a line of its own. */
export function wrap(words, lineChars = LINE_CHARS) {
  const lines = [];
  let line = "";
  for (const word of words) {
    if (line && length(line) + 1 + length(word) > lineChars) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

function fits(group, word) {
  if (word.end - group[0].start > MAX_CUE_SECONDS) return false;
  if (word.start - group[group.length - 1].end > MAX_GAP_SECONDS) return false;
  return wrap([...group, word].map((w) => w.text)).length <= MAX_LINES;
}

function cue(final, words) {
  const start = words[0].start;
  const end = Math.max(words[words.length - 1].end, start + 0.001);
  return { speaker: final.speaker, name: final.name, start, end, lines: wrap(words.map((w) => w.text)) };
}

/** Every final utterance split into cues short enough to read. */
export function cues(finals) {
  const out = [];
  for (const final of writtenFinals(finals)) {
    let group = [];
    for (const word of final.words) {
      if (group.length && !fits(group, word)) {
        out.push(cue(final, group));
        group = [];
      }
      group.push(word);
    }
    if (group.length) out.push(cue(final, group));
  }
  return out.sort((a, b) => compareNumbers(a.start, b.start) || compareText(a.speaker, b.speaker));
}

/** A time in whole milliseconds, half up, never negative. */
export function milliseconds(seconds) {
  return Math.max(0, Math.floor(seconds * 1000 + 0.5));
}

/** A cue's start and end in milliseconds; it lasts at least 1 ms once rounded. */
function span(c) {
  const start = milliseconds(c.start);
  return [start, Math.max(milliseconds(c.end), start + 1)];
}

function clock(ms, separator) {
  const h = Math.floor(ms / 3600000);
  ms -= h * 3600000;
  const m = Math.floor(ms / 60000);
  ms -= m * 60000;
  const s = Math.floor(ms / 1000);
  ms -= s * 1000;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(h)}:${pad(m)}:${pad(s)}${separator}${pad(ms, 3)}`;
}

const vttEscape = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
// A voice ending in "-" would form "-->" with the tag's ">": its last hyphen is a reference.
const vttVoice = (name) => {
  const escaped = vttEscape(name);
  return escaped.endsWith("-") ? `${escaped.slice(0, -1)}&#45;` : escaped;
};
const noArrow = (text) => text.replace(ARROW, "->");

export function toVtt(finals) {
  const blocks = ["WEBVTT"];
  for (const c of cues(finals)) {
    const voice = vttVoice(c.name);
    const body = c.lines.map((line) => `<v ${voice}>${vttEscape(line)}</v>`).join("\n");
    const [start, end] = span(c);
    blocks.push(`${clock(start, ".")} --> ${clock(end, ".")}\n${body}`);
  }
  return `${blocks.join("\n\n")}\n`;
}

export function toSrt(finals) {
  return cues(finals)
    .map((c, i) => {
      const [start, end] = span(c);
      return `${i + 1}\n${clock(start, ",")} --> ${clock(end, ",")}\n${noArrow(`${c.name}: ${c.lines.join("\n")}`)}\n\n`;
    })
    .join("");
}

export function toTxt(finals) {
  return writtenFinals(finals)
    .map((f) => {
      const text = f.words.map((w) => w.text).join(" ");
      const times = `[${clock(milliseconds(f.words[0].start), ".")} - ${clock(milliseconds(f.words[f.words.length - 1].end), ".")}]`;
      return `${times} ${noArrow(`${f.name}: ${text}`)}\n`;
    })
    .join("");
}

export const WRITERS = {
  vtt: { write: toVtt, type: "text/vtt" },
  srt: { write: toSrt, type: "application/x-subrip" },
  txt: { write: toTxt, type: "text/plain" },
};
