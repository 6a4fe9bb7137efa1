// Injected into test pages before the app loads: a MutationObserver that stamps when each
// caption line and each word first appears in the overlay, and when it becomes final.
// Times are wall-clock milliseconds (performance.timeOrigin + performance.now()).
// Used by the browser tests (which speaker said what) and by evaluation/e2e_latency.py.
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const log = { lines: {}, order: [] };
  window.__captionRecorder = log;

  function scan() {
    const t = now();
    for (const line of document.querySelectorAll("[data-testid=captions] .caption-line")) {
      const key = `${line.dataset.speakerId}/${line.dataset.utterance}`;
      let entry = log.lines[key];
      if (!entry) {
        entry = log.lines[key] = {
          key,
          speaker: line.dataset.speaker,
          speakerId: line.dataset.speakerId,
          utterance: Number(line.dataset.utterance),
          firstSeen: t,
          finalAt: null,
          final: false,
          text: "",
          words: [], // {text, seen, finalAt}
          // First time each text was shown at each position ("3:budget" -> ms), even if
          // the word changed in between: the same rule as evaluation/simulate.py.
          shown: {},
        };
        log.order.push(key);
      }
      const spans = line.querySelectorAll(".caption-text .w");
      spans.forEach((span, i) => {
        const text = span.textContent.trim();
        const final = !span.classList.contains("partial");
        let word = entry.words[i];
        if (!word || word.text !== text) word = entry.words[i] = { text, seen: t, finalAt: null };
        if (!(`${i}:${text}` in entry.shown)) entry.shown[`${i}:${text}`] = t;
        if (final && word.finalAt === null) word.finalAt = t;
      });
      entry.words.length = spans.length;
      entry.text = entry.words.map((w) => w.text).join(" ");
      entry.final = line.dataset.final === "true";
      if (entry.final && entry.finalAt === null) entry.finalAt = t;
    }
  }

  const start = () => {
    new MutationObserver(scan).observe(document.body, {
      subtree: true,
      childList: true,
      characterData: true,
      attributes: true,
      attributeFilter: ["data-final", "class"],
    });
  };
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);

  // The first sample above ONSET of each new microphone stream, to line the fake
  // microphone's file up with the wall clock (polled every few ms: ~10 ms precision).
  const ONSET = 0.02;
  function watchOnset(stream) {
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 256;
    context.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const started = now();
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      for (let i = 0; i < samples.length; i++) {
        if (Math.abs(samples[i]) > ONSET) {
          const age = ((samples.length - i) / context.sampleRate) * 1000;
          (log.micOnsets = log.micOnsets || []).push({ started, at: now() - age });
          clearInterval(timer);
          context.close();
          return;
        }
      }
      if (now() - started > 60000) clearInterval(timer);
    }, 4);
  }

  // When the fake microphone starts: the file plays from its beginning at that moment.
  const original = navigator.mediaDevices?.getUserMedia?.bind(navigator.mediaDevices);
  if (original) {
    navigator.mediaDevices.getUserMedia = async (constraints) => {
      const stream = await original(constraints);
      if (constraints && constraints.audio && stream.getAudioTracks().length) {
        (log.micStarts = log.micStarts || []).push(now());
        watchOnset(stream);
      }
      return stream;
    };
  }
})();
