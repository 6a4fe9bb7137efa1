// Caption overlay: one line per (speaker, utterance), replaced by each newer revision
// (docs/caption-format.md). Words keep their DOM node while they stay the same, so a partial
// settling into a final only changes a class and the line does not move.
//
// Reading time is a rule of the overlay (readingTimeMs): a final stays on screen at least
// long enough to be read at the viewer's reading speed. Others' speech takes new lines;
// the box grows to a bounded number of text lines (CSS --caption-box-lines), then scrolls,
// always to the start of a line, so a line's start and speaker name are not cut off (when
// one utterance alone is taller than the box, its name is pinned at the top). Only lines
// already read leave to make room. See docs/meeting-page.md.
//
// Final captions are also appended to a visually hidden aria-live="polite" log, so screen
// readers announce each finished sentence once and never the partials.
//
// Languages (docs/languages.md): a line's words get the caption's `language` as their `lang`
// (screen readers pronounce them right) and a small tag (FR, EN...) when it is not the
// page's language; a caption flagged `unsupported_language` (speech the model cannot
// transcribe) shows a notice saying another model is needed instead of words.

import { language as pageLanguage, t } from "./i18n.js";

/** Reading speeds a viewer can choose, in words per minute. Broadcast practice gives a
 * reader about 160-180 words a minute. */
export const READING_SPEEDS = { slow: 120, normal: 180, fast: 240 };
const READING_BASE_MS = 1500;
const READING_CAP_MS = 15000;

/** The reading-time rule: how long a final of `words` words stays at least, in ms:
 * 1.5 s plus one word per (60 / wpm) s, capped at 15 s. */
export function readingTimeMs(words, speed = "normal") {
  const wpm = READING_SPEEDS[speed] ?? READING_SPEEDS.normal;
  return Math.min(READING_CAP_MS, READING_BASE_MS + (Math.max(0, words) * 60000) / wpm);
}

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
   * @param {{keepLines?: number, lingerMs?: number, staleMs?: number, readingSpeed?: string,
   *          colours?: SpeakerColours, now?: () => number}} options keepLines bounds the
   *   lines kept (beyond it the oldest final goes even unread: it stays in the transcript)
   */
  constructor(container, log, { keepLines = 12, lingerMs = 9000, staleMs = 30000, readingSpeed = "normal", colours, now } = {}) {
    this.container = container;
    this.log = log;
    this.keepLines = keepLines;
    this.lingerMs = lingerMs;
    this.staleMs = staleMs;
    this.readingSpeed = readingSpeed;
    this.now = now || (() => Date.now());
    this.colours = colours || new SpeakerColours();
    this.lines = new Map(); // key -> {revision, final, el, words, readingMs, shownMs, shown, expiresAt}
    this.done = new Map(); // key -> revision of lines already removed, to drop late revisions
    this.logLimit = 30;
    this.timer = null;
    this.lastTick = null;
    this.pinned = document.createElement("span"); // the name of a line cut at the top
    this.pinned.className = "caption-pinned caption-speaker";
    this.pinned.hidden = true;
    this.more = document.createElement("span"); // newer text waits below the box
    this.more.className = "caption-more";
    this.more.textContent = "▼";
    this.more.hidden = true;
    // Both marks repeat what the (aria-hidden) overlay shows; the live log speaks for it.
    for (const mark of [this.pinned, this.more]) mark.setAttribute("aria-hidden", "true");
    this.top = 0; // where scroll() put the box's top (smooth scrolling may not be there yet)
  }

  /** Applies one caption event; returns false when it was stale or malformed. */
  update(event) {
    if (!isCaptionEvent(event)) return false;
    const key = `${event.speaker}\u0000${event.utterance}`;
    let line = this.lines.get(key);
    if (this.done.has(key)) return false;
    if (line && (line.final || event.revision <= line.revision)) return false;
    const unsupported = Boolean(event.flags && event.flags.unsupported_language);
    if (!line) {
      if (event.words.length === 0 && event.kind === "partial" && !unsupported) return false;
      line = this.createLine(event, key);
    }
    const now = this.now();
    this.tick(now); // reading time so far is counted before this line changes
    line.revision = event.revision;
    line.final = event.kind === "final";
    line.el.dataset.final = String(line.final);
    const words = unsupported ? [{ text: t("captions.unsupported_language"), final: true }] : event.words;
    this.showLanguage(line, event, unsupported);
    this.renderWords(line, words, line.final);
    if (line.final) {
      line.readingMs = readingTimeMs(words.length, this.readingSpeed);
      line.expiresAt = now + Math.max(this.lingerMs, line.readingMs);
      if (words.length === 0) this.removeLine(key);
      else this.announce(event, words);
    } else {
      line.expiresAt = now + this.staleMs; // an open utterance is never pushed out
    }
    this.layout();
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
    const line = { key, revision: 0, final: false, el, text, words: [], readingMs: 0, shownMs: 0, shown: false, expiresAt: 0 };
    this.lines.set(key, line);
    return line;
  }

  /** The line's language: `lang` on its words, a tag when it is not the page's. */
  showLanguage(line, event, unsupported) {
    line.el.dataset.unsupported = String(unsupported);
    const lang = unsupported ? pageLanguage() : event.language;
    if (typeof lang !== "string" || !lang) return;
    line.text.lang = lang;
    const foreign = !unsupported && lang.split("-")[0] !== pageLanguage();
    if (foreign && !line.tag) {
      line.tag = document.createElement("span");
      line.tag.className = "caption-language";
      line.text.before(line.tag);
    }
    if (line.tag) {
      line.tag.hidden = !foreign;
      line.tag.textContent = lang.toUpperCase();
    }
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

  announce(event, words = event.words) {
    if (!this.log) return;
    const entry = document.createElement("p");
    entry.textContent = `${speakerName(event)}: ${words.map((w) => w.text).join(" ")}`;
    this.log.append(entry);
    while (this.log.childElementCount > this.logLimit) this.log.firstElementChild.remove();
  }

  /** Makes room (only lines already read leave), then scrolls. */
  layout() {
    const now = this.now();
    this.tick(now);
    // The bound on kept lines: read finals go first, then the oldest final, then the oldest.
    while (this.lines.size > this.keepLines) {
      this.removeLine(this.oldestFinal({ read: true }) ?? this.oldestFinal() ?? this.lines.keys().next().value);
    }
    // Lines already read leave while the box overflows, oldest first.
    while (this.lines.size > 1 && this.overflowing()) {
      const victim = this.oldestFinal({ read: true });
      if (victim === null) break;
      this.removeLine(victim);
    }
    this.scroll();
    this.markShown();
  }

  /** Reading time counts while a final's start is on screen (or captions are hidden). */
  tick(now) {
    const elapsed = Math.max(0, now - (this.lastTick ?? now));
    this.lastTick = now;
    for (const line of this.lines.values()) if (line.final && line.shown) line.shownMs += elapsed;
  }

  markShown() {
    const box = this.container;
    if (box.clientHeight === 0) {
      for (const line of this.lines.values()) line.shown = true;
      return;
    }
    const top = this.top + (parseFloat(getComputedStyle(box).paddingTop) || 0) - 1;
    const bottom = this.top + box.clientHeight;
    for (const line of this.lines.values()) {
      const start = line.el.offsetTop;
      line.shown = start >= top && start + 1 < bottom;
    }
  }

  isRead(line) {
    return line.final && line.shownMs >= line.readingMs;
  }

  /** Whether the lines are taller than the box can grow. False while it is hidden. */
  overflowing() {
    const box = this.container;
    return box.clientHeight > 0 && box.scrollHeight > box.clientHeight + 1;
  }

  /** The top of the box sits at the start of a line: the oldest final not read yet, or
   * else the first line that lets the newest text show (the rest of the box left empty
   * below). So a final is never scrolled away before it is read; a newer partial below
   * it may show its first words only until there is room. A line taller than the box
   * keeps its newest words in view and its speaker's name pinned at the top. */
  scroll() {
    const box = this.container;
    box.style.setProperty("--caption-spacer", "0px");
    this.pinned.hidden = true;
    this.more.hidden = true;
    if (!this.overflowing()) {
      this.scrollTo(0);
      return;
    }
    const padding = parseFloat(getComputedStyle(box).paddingTop) || 0;
    const needed = box.scrollHeight - box.clientHeight;
    const lines = [...this.lines.values()];
    const unread = lines.find((l) => l.final && !this.isRead(l));
    const start = unread ?? lines.find((l) => l.el.offsetTop - padding >= needed - 1);
    if (start) {
      const top = start.el.offsetTop - padding;
      box.style.setProperty("--caption-spacer", `${Math.max(0, top - needed)}px`);
      this.scrollTo(top);
      // Newer text below an unread final: a mark says more is coming.
      if (top < needed - 1) this.place(this.more, box.offsetTop + box.offsetHeight, box.offsetLeft + box.offsetWidth);
      return;
    }
    this.scrollTo(needed);
    // The newest line alone is taller than the box: its start is above, its name is pinned.
    const cut = lines[lines.length - 1].el;
    this.pinned.textContent = cut.dataset.speaker;
    this.pinned.dataset.color = cut.dataset.color;
    this.place(this.pinned, box.offsetTop, box.offsetLeft);
  }

  scrollTo(top) {
    this.top = top;
    this.container.scrollTop = top;
  }

  /** Shows a mark beside the box, in the caption region (top/left in its pixels). */
  place(mark, top, left) {
    mark.style.top = `${top}px`;
    mark.style.left = `${left}px`;
    mark.hidden = false;
    const region = this.container.parentElement;
    if (region && mark.parentElement !== region) region.append(mark);
  }

  /** The oldest final line (with `read`, only one already read), or null. */
  oldestFinal({ read = false } = {}) {
    for (const [key, line] of this.lines) if (line.final && (!read || this.isRead(line))) return key;
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
    this.timer = setInterval(() => this.expire(), 500);
  }

  expire(now = this.now()) {
    this.tick(now);
    for (const [key, line] of [...this.lines]) {
      if (line.expiresAt <= now && (!line.final || this.isRead(line))) this.removeLine(key);
    }
    this.layout(); // lines read meanwhile may now leave for the ones waiting
    if (this.lines.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  clear() {
    for (const key of [...this.lines.keys()]) this.removeLine(key);
    this.scroll();
  }
}
