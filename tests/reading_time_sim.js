// Speakers talking over each other on a simulated clock, for tests/test_browser_page.py:
// counts finals removed before their reading time on screen, lines cut at the top
// without their name, and the longest wait before a final first shows.
(async ({speakers, stepMs, durationMs}) => {
  const { readingTimeMs } = await import('/static/captions.js');
  const box = document.querySelector('[data-testid=lab-captions]');
  box.style.scrollBehavior = 'auto';
  const lab = document.querySelector('#lab');
  lab.style.width = '100%';
  lab.style.bottom = '0'; lab.style.top = 'auto';
  const pad = () => parseFloat(getComputedStyle(box).paddingTop);
  const finals = new Map(); // key -> {at, until}
  let removedEarly = 0, cut = 0, maxLagMs = 0;
  const pinned = () => !window.overlay.pinned.hidden;
  const state = speakers.map((s, i) => ({ ...s, utterance: 0, word: 0, next: s.startMs, rev: 0 }));
  for (let t = 0; t <= durationMs; t += stepMs) {
    window.clock = t;
    for (const s of state) {
      if (t < s.next) continue;
      s.word += 1; s.rev += 1;
      const done = s.word >= s.words;
      const words = Array.from({ length: s.word }, (_, k) => ({ text: `${s.name[0]}${s.utterance}w${k}`, start: k * 0.33, end: k * 0.33 + 0.3, final: done }));
      window.overlay.update({ type: 'caption', speaker: s.id, speaker_name: s.name, utterance: s.utterance, revision: s.rev, kind: done ? 'final' : 'partial', words, emitted_at: t / 1000 });
      if (done) {
        finals.set(`${s.id}\u0000${s.utterance}`, { at: t, need: readingTimeMs(s.words), shown: 0, first: null });
        s.utterance += 1; s.word = 0; s.rev = 0; s.next = t + s.pauseMs;
      } else s.next = t + s.wordMs;
    }
    window.overlay.expire(t);
    const r = box.getBoundingClientRect();
    for (const el of box.querySelectorAll('.caption-line')) {
      const e = el.getBoundingClientRect();
      if (e.top < r.top + pad() - 1 && e.bottom > r.top + pad() + 1 && !pinned()) cut += 1;
    }
    for (const [key, f] of finals) {
      const line = window.overlay.lines.get(key);
      if (!line) {
        if (f.shown < f.need - 2 * stepMs) removedEarly += 1;
        finals.delete(key);
        continue;
      }
      const e = line.el.getBoundingClientRect();
      if (e.top >= r.top + pad() - 1 && e.top < r.bottom) {
        f.shown += stepMs;
        if (f.first === null) { f.first = t; maxLagMs = Math.max(maxLagMs, t - f.at); }
      }
    }
  }
  return { removedEarly, cut, maxLagMs, finals: finals.size, boxLines: getComputedStyle(box.parentElement).getPropertyValue('--caption-box-lines') };
})
