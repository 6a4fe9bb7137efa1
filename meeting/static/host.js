// Host controls: captions on or off for the whole room, the spoken language, and the
// server's stored transcript. The server checks that the sender is a host.

import { languageName } from "./captionfeed.js";
import { role } from "./dom.js";
import { onLanguageChange, t } from "./i18n.js";
import { ERROR_MESSAGES, notify } from "./screens.js";
import { current, onChange } from "./store.js";
import { saveFile } from "./transcript.js";

export function bindHost() {
  role("host-toggle").hidden = false;
  const toggle = role("room-captions-toggle");
  toggle.hidden = false;
  toggle.addEventListener("click", () => current().captionSocket?.setCaptions(!current().roomCaptions.enabled));
  role("host-language").addEventListener("change", (e) => current().captionSocket?.setLanguage(e.target.value));
  const room = current().link.room;
  for (const link of document.querySelectorAll("[data-server-download]")) {
    const format = link.dataset.serverDownload;
    link.href = `/rooms/${encodeURIComponent(room)}/transcript.${format}`;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      downloadServerTranscript(format);
    });
  }
  onChange((keys) => {
    if (keys.has("roomCaptions")) render();
  });
  onLanguageChange(render);
  render();
}

async function downloadServerTranscript(format) {
  const { room, token } = current().link;
  try {
    const response = await fetch(`/rooms/${encodeURIComponent(room)}/transcript.${format}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      notify(t(ERROR_MESSAGES[body.error] || "error.unknown", { detail: body.error || response.status }));
      return;
    }
    const stamp = new Date().toISOString().slice(0, 10);
    saveFile(`${room}-${stamp}.${format}`, await response.text(), response.headers.get("Content-Type") || "text/plain");
  } catch (error) {
    notify(t("error.unknown", { detail: String(error) }));
  }
}

function render() {
  const { enabled, languages = [], language } = current().roomCaptions;
  const toggle = role("room-captions-toggle");
  toggle.setAttribute("aria-checked", String(enabled));
  toggle.dataset.enabled = String(enabled);
  // The switch keeps one name; aria-checked says whether it is on.
  role("room-captions-label").textContent = t("host.room_captions");
  role("language-field").hidden = languages.length < 2;
  const select = role("host-language");
  if (languages.length >= 2) {
    select.replaceChildren(...languages.map((code) => new Option(languageName(code), code)));
    select.value = language || languages[0];
  }
}
