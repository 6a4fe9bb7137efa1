// Caption overlay: one line per (speaker, utterance), replaced by each newer revision
// (docs/caption-format.md). Words keep their DOM node while they stay the same, so a partial
// settling into a final only changes a class and the line does not move. At most
// `maxLines` lines stay in the overlay; the overlay box itself is clamped to three text
// lines by CSS, the oldest text leaving at the top.
//
// Final captions are also appended to a visually hidden aria-live="polite" log, so screen
// readers announce each finished sentence once and never the partials.

export const PALETTE_SIZE = 8;

/** Stable colour slot per speaker id: a hash, probing past slots taken by other speakers. */
export class SpeakerColours {
  constructor(size = PALETTE_SIZE) {
    this.size = size;
    this.slots = new Map();
  }

  slot(speakerId) {
    const known = this.slots.get(speakerId);
    if (known !== undefined) return known;
    let slot = hash(speakerId) % this.size;
    const taken = new Set(this.slots.values());
    for (let i = 0; i < this.size && taken.has(slot); i++) slot = (slot + 1) % this.size;
    this.slots.set(speakerId, slot);
    return slot;
  }
}

function hash(text) {
  // FNV-1a: cheap, and the same speaker id gives the same colour in every viewer's page.
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export function isCaptionEvent(data) {
  return (
    data !== null &&
    typeof data === "object" &&
    data.type === "caption" &&
    typeof data.speaker === "string" &&
    Number.isFinite(data.utterance) &&
    Number.isFinite(data.revision) &&
    (data.kind === "partial" || data.kind === "final") &&
    Array.isArray(data.words)
  );
}

export function speakerName(event) {
  return event.speaker_name || event.speaker;
}

export class CaptionOverlay {
  /**
   * @param {HTMLElement} container the overlay ([data-testid=captions])
   * @param {HTMLElement|null} log the aria-live log region that receives finals
   */
  constructor(container, log, { maxLines = 3, lingerMs = 9000, staleMs = 30000, colours } = {}) {
    this.container = container;
    this.log = log;
    this.maxLines = maxLines;
    this.lingerMs = lingerMs;
    this.staleMs = staleMs;
    this.colours = colours || new SpeakerColours();
    this.lines = new Map(); // key -> {revision, final, el, words: [span], expiresAt}
    this.done = new Map(); // key -> revision of lines already removed, to drop late revisions
    this.logLimit = 30;
    this.timer = null;
  }

  /** Applies one caption event; returns false when it was stale or malformed. */
  update(event) {
    if (!isCaptionEvent(event)) return false;
    const key = `${event.speaker}\u0000${event.utterance}`;
    let line = this.lines.get(key);
    if (this.done.has(key)) return false;
    if (line && (line.final || event.revision <= line.revision)) return false;
    if (!line) {
      if (event.words.length === 0 && event.kind === "partial") return false;
      line = this.createLine(event, key);
    }
    line.revision = event.revision;
    line.final = event.kind === "final";
    line.el.dataset.final = String(line.final);
    this.renderWords(line, event.words, line.final);
    const now = Date.now();
    line.expiresAt = now + (line.final ? this.lingerMs : this.staleMs);
    if (line.final) {
      if (event.words.length === 0) this.removeLine(key);
      else this.announce(event);
    }
    this.trim();
    this.schedule();
    return true;
  }

  createLine(event, key) {
    const el = document.createElement("div");
    el.className = "caption-line";
    el.dataset.speaker = speakerName(event);
    el.dataset.speakerId = event.speaker;
    el.dataset.utterance = String(event.utterance);
    el.dataset.color = String(this.colours.slot(event.speaker));
    const name = document.createElement("span");
    name.className = "caption-speaker";
    name.textContent = speakerName(event);
    const text = document.createElement("span");
    text.className = "caption-text";
    el.append(name, text);
    const last = this.container.lastElementChild;
    if (last && last.dataset.speakerId === event.speaker) el.classList.add("continued");
    this.container.append(el);
    const line = { key, revision: 0, final: false, el, text, words: [], expiresAt: 0 };
    this.lines.set(key, line);
    return line;
  }

  renderWords(line, words, allFinal) {
    for (let i = 0; i < words.length; i++) {
      const word = words[i];
      const final = allFinal || Boolean(word.final);
      let span = line.words[i];
      if (!span) {
        span = document.createElement("span");
        span.className = "w";
        line.text.append(span);
        line.words.push(span);
      }
      // The space lives in the span so that textContent and innerText read naturally.
      const text = i === 0 ? String(word.text) : ` ${word.text}`;
      if (span.textContent !== text) span.textContent = text;
      span.classList.toggle("partial", !final);
    }
    for (const span of line.words.splice(words.length)) span.remove();
  }

  announce(event) {
    if (!this.log) return;
    const entry = document.createElement("p");
    entry.textContent = `${speakerName(event)}: ${event.words.map((w) => w.text).join(" ")}`;
    this.log.append(entry);
    while (this.log.childElementCount > this.logLimit) this.log.firstElementChild.remove();
  }

  trim() {
    // Finished lines go first: dropping an open utterance would hide the rest of it.
    while (this.lines.size > this.maxLines) this.removeLine(this.oldestFinal() ?? this.lines.keys().next().value);
    // The box shows three text lines; a finished line that no longer fits whole leaves
    // too, so the top line is never a nameless continuation cut in half.
    while (this.lines.size > 1 && this.overflowing()) {
      const victim = this.oldestFinal();
      if (victim === null) break;
      this.removeLine(victim);
    }
  }

  /** Whether the lines are taller than the box (overflow at the top is not scrollable,
   * so scrollHeight cannot tell). False while the overlay is hidden. */
  overflowing() {
    const box = this.container;
    if (box.clientHeight === 0) return false;
    const style = getComputedStyle(box);
    const room = box.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
    let used = 0;
    for (const child of box.children) used += child.getBoundingClientRect().height;
    return used > room + 1;
  }

  oldestFinal() {
    for (const [key, line] of this.lines) if (line.final) return key;
    return null;
  }

  removeLine(key) {
    const line = this.lines.get(key);
    if (!line) return;
    line.el.remove();
    this.lines.delete(key);
    this.done.set(key, line.revision);
    // The first remaining line shows its speaker's name again.
    this.container.firstElementChild?.classList.remove("continued");
    if (this.done.size > 500) this.done.delete(this.done.keys().next().value);
  }

  schedule() {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.expire(), 1000);
  }

  expire(now = Date.now()) {
    for (const [key, line] of [...this.lines]) if (line.expiresAt <= now) this.removeLine(key);
    if (this.lines.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  clear() {
    for (const key of [...this.lines.keys()]) this.removeLine(key);
  }
}
