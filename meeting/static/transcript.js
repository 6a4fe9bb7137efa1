// Transcript panel: the room's final captions with times and speakers, searchable, and
// downloadable as WebVTT, SRT or text made in the page (any participant), while hosts can
// also fetch the server's stored transcript.
//
// Caption words carry *stream* times (seconds since that speaker's stream opened). To put
// every speaker on one timeline the panel maps them to wall-clock time: with the event's
// `stream_started_at` when the server gives it, otherwise with an estimate of the stream's
// start per speaker (emitted_at minus the last word's end, the smallest such gap seen,
// i.e. the least delayed event).

import { isCaptionEvent, speakerName } from "./captions.js";
import { WRITERS } from "./cuerule.js";
import { language, t } from "./i18n.js";

const RESTART_GAP_SECONDS = 20;

export class Transcript {
  constructor({ limit = 5000 } = {}) {
    this.limit = limit;
    this.entries = []; // sorted by start
    this.keys = new Set();
    this.origins = new Map(); // speaker id -> estimated wall time of stream time 0
    this.listeners = new Set();
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  /** Adds a final caption event; partials, empties and duplicates are ignored. */
  add(event) {
    if (!isCaptionEvent(event) || event.kind !== "final" || event.words.length === 0) return null;
    const first = event.words[0];
    const last = event.words[event.words.length - 1];
    const key = `${event.speaker}\u0000${event.utterance}\u0000${first.start}`;
    if (this.keys.has(key)) return null;
    const origin = this.origin(event, Number(last.end));
    const entry = {
      key,
      speaker: event.speaker,
      utterance: event.utterance,
      name: speakerName(event),
      text: event.words.map((w) => w.text).join(" "),
      words: event.words.map((w) => ({ text: String(w.text), start: origin + Number(w.start), end: origin + Number(w.end) })),
      start: origin + Number(first.start),
      end: origin + Number(last.end),
    };
    this.keys.add(key);
    let index = this.entries.length;
    while (index > 0 && this.entries[index - 1].start > entry.start) index--;
    this.entries.splice(index, 0, entry);
    if (this.entries.length > this.limit) {
      const dropped = this.entries.shift();
      this.keys.delete(dropped.key);
    }
    for (const listener of this.listeners) listener(entry, index);
    return entry;
  }

  origin(event, lastEnd) {
    if (Number.isFinite(event.stream_started_at)) return event.stream_started_at;
    const estimate = Number(event.emitted_at) - lastEnd;
    const known = this.origins.get(event.speaker);
    // A much later origin means the speaker's stream started again (they rejoined).
    if (known === undefined || estimate < known || estimate > known + RESTART_GAP_SECONDS) {
      this.origins.set(event.speaker, estimate);
      return estimate;
    }
    return known;
  }

  clear() {
    this.entries = [];
    this.keys.clear();
    for (const listener of this.listeners) listener(null, -1);
  }

  /** The entries as the cue writers take them: times in seconds since the first
   * caption's start, as the server's stored transcript counts them. */
  timeline() {
    const base = this.entries.length ? Math.min(...this.entries.map((e) => e.start)) : 0;
    return this.entries.map((e) => ({
      speaker: e.speaker,
      name: e.name,
      utterance: e.utterance,
      words: e.words.map((w) => ({ text: w.text, start: w.start - base, end: w.end - base })),
    }));
  }

  /** Entries whose speaker or text contains every word of the query (case and accents ignored). */
  search(query) {
    const terms = fold(query).split(/\s+/).filter(Boolean);
    if (terms.length === 0) return this.entries;
    return this.entries.filter((e) => {
      const haystack = fold(`${e.name} ${e.text}`);
      return terms.every((term) => haystack.includes(term));
    });
  }
}

export function fold(text) {
  return String(text).normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
}

// ---- Downloads: the cue rule (cuerule.js) on the panel's own view ----

export function saveFile(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- Panel ----

export class TranscriptPanel {
  /**
   * @param {HTMLElement} panel [data-testid=transcript]
   * @param {Transcript} transcript
   * @param {{colours: import("./captions.js").SpeakerColours, room: string}} options
   */
  constructor(panel, transcript, { colours, room }) {
    this.panel = panel;
    this.transcript = transcript;
    this.colours = colours;
    this.room = room;
    this.list = panel.querySelector("[data-role=transcript-list]");
    this.search = panel.querySelector("[data-role=transcript-search]");
    this.status = panel.querySelector("[data-role=transcript-status]");
    this.query = "";
    transcript.onChange((entry) => this.onEntry(entry));
    this.search.addEventListener("input", () => {
      this.query = this.search.value;
      this.render();
    });
    for (const button of panel.querySelectorAll("[data-download]")) {
      button.addEventListener("click", () => this.download(button.dataset.download));
    }
    this.render();
  }

  onEntry(entry) {
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    if (entry && !this.query && this.list.lastElementChild?.dataset.start <= entry.start) {
      this.list.querySelector("[data-role=empty]")?.remove();
      this.list.append(this.item(entry));
    } else {
      this.render();
    }
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  render() {
    const entries = this.transcript.search(this.query);
    const items = entries.map((e) => this.item(e));
    if (items.length === 0) {
      const empty = document.createElement("li");
      empty.dataset.role = "empty";
      empty.className = "transcript-empty";
      empty.textContent = this.query ? t("transcript.no_match") : t("transcript.empty");
      items.push(empty);
    }
    this.list.replaceChildren(...items);
    this.status.textContent = this.query ? t("transcript.matches", { count: entries.length }) : "";
  }

  item(entry) {
    const li = document.createElement("li");
    li.className = "transcript-entry";
    li.dataset.speaker = entry.name;
    li.dataset.start = String(entry.start);
    li.dataset.color = String(this.colours.slot(entry.speaker));
    const time = document.createElement("time");
    const date = new Date(entry.start * 1000);
    time.dateTime = date.toISOString();
    time.textContent = date.toLocaleTimeString(language(), { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    const name = document.createElement("span");
    name.className = "transcript-speaker";
    name.textContent = entry.name;
    const text = document.createElement("span");
    text.className = "transcript-text";
    text.append(...highlight(entry.text, this.query));
    li.append(time, " ", name, " ", text);
    return li;
  }

  download(format) {
    const writer = WRITERS[format];
    if (!writer) return;
    const stamp = new Date().toISOString().slice(0, 10);
    saveFile(`${this.room}-${stamp}.${format}`, writer.write(this.transcript.timeline()), writer.type);
  }
}

/** Text nodes with <mark> around each occurrence of the query's words. */
function highlight(text, query) {
  const terms = fold(query).split(/\s+/).filter(Boolean);
  if (terms.length === 0) return [document.createTextNode(text)];
  // Folding can change lengths (ligatures); match on the folded text only when it does not.
  const folded = fold(text);
  if (folded.length !== text.length) return [document.createTextNode(text)];
  const marks = new Array(text.length).fill(false);
  for (const term of terms) {
    for (let i = folded.indexOf(term); i >= 0; i = folded.indexOf(term, i + 1)) {
      for (let j = i; j < i + term.length; j++) marks[j] = true;
    }
  }
  const nodes = [];
  let i = 0;
  while (i < text.length) {
    let j = i;
    while (j < text.length && marks[j] === marks[i]) j++;
    const piece = text.slice(i, j);
    if (marks[i]) {
      const mark = document.createElement("mark");
      mark.textContent = piece;
      nodes.push(mark);
    } else {
      nodes.push(document.createTextNode(piece));
    }
    i = j;
  }
  return nodes;
}
