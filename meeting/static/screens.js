// Screens (join, error, meeting), the skip link, error messages and notices.

import { $, role } from "./dom.js";
import { language, onLanguageChange, t } from "./i18n.js";
import { current, onChange } from "./store.js";

const NOTICE_MS = 10000;

export const ERROR_MESSAGES = {
  token_missing: "error.no_token",
  token_invalid: "error.invalid",
  token_expired: "error.expired",
  wrong_room: "error.wrong_room",
  forbidden: "error.forbidden",
  room_full: "error.room_full",
  replaced: "error.replaced",
  connection_failed: "error.connection_failed",
  media_blocked: "error.media_blocked",
  timeout: "error.connection_failed",
};

let noticeTimer = null;
const beforeError = new Set();

/** Called before an error screen replaces the current one (to stop the preview). */
export function onErrorScreen(listener) {
  beforeError.add(listener);
}

export function showScreen(id) {
  for (const screen of document.querySelectorAll(".screen")) screen.hidden = screen.id !== id;
  refreshSkipLink();
}

/** The skip link leads to the captions in a meeting, else to the screen's main content. */
function skipTarget() {
  if (!$("#meeting").hidden) return $("#captions-region");
  return document.querySelector(".screen:not([hidden])");
}

function refreshSkipLink() {
  const link = role("skip-link");
  const target = skipTarget();
  const inMeeting = target?.id === "captions-region";
  link.dataset.i18n = inMeeting ? "meeting.captions" : "skip.main";
  link.textContent = t(link.dataset.i18n);
  if (target) link.setAttribute("href", `#${target.id}`);
}

export function showError(code, { heading = "error.heading", retry = false, detail = "" } = {}) {
  for (const listener of beforeError) listener();
  showScreen("error-screen");
  const key = ERROR_MESSAGES[code];
  role("error-heading").textContent = t(heading);
  const message = role("error-message");
  message.dataset.code = code;
  if (code === "left") message.textContent = "";
  else message.textContent = key ? t(key) : t("error.unknown", { detail: detail || code });
  const button = role("error-retry");
  button.hidden = !retry;
  // The token is kept in memory since load: put it back in the fragment for the reload,
  // whatever changed the URL meanwhile.
  button.onclick = () => {
    const token = current().link?.token;
    if (token) history.replaceState(null, "", `${location.pathname}${location.search}#token=${token}`);
    location.reload();
  };
  if (retry) button.textContent = t(heading === "meeting.left" ? "meeting.rejoin" : "error.retry");
  role("error-heading").focus();
}

/** An error reply on either socket that leaves us connected. */
export function onServerError(event) {
  if (event.detail.code === "forbidden") notify(t("error.forbidden"));
}

export function notify(text, { brief = false, sticky = false } = {}) {
  const notice = role("notice");
  notice.textContent = text;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => (notice.textContent = ""), brief ? NOTICE_MS / 2 : NOTICE_MS);
}

/** The lasting captions-only notice (connection.js) with its "Try again" (`onRetry`). */
export function showCaptionsOnly(onRetry) {
  // Written anew each time, so that screen readers announce it again.
  role("captions-only-message").textContent = t("captions_only.message");
  role("captions-only-retry").onclick = onRetry;
  role("captions-only").hidden = false;
}

export function hideCaptionsOnly() {
  role("captions-only").hidden = true;
}

function refreshLabels() {
  role("room-name").textContent = current().link?.room || t("app.title");
  // The switch names the other language, in that language.
  $(".lang-switch").lang = language() === "fr" ? "en" : "fr";
  refreshSkipLink();
  const message = role("error-message");
  if (message.dataset.code && ERROR_MESSAGES[message.dataset.code]) message.textContent = t(ERROR_MESSAGES[message.dataset.code]);
}

export function bindScreens() {
  role("skip-link").addEventListener("click", (event) => {
    // Focus moves; the URL fragment, which holds the token, stays as it is.
    event.preventDefault();
    skipTarget()?.focus();
  });
  onLanguageChange(refreshLabels);
  onChange((keys) => {
    if (keys.has("link")) refreshLabels();
  });
  refreshLabels();
}

export { refreshLabels as refreshScreenLabels };
