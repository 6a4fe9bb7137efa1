// The meeting page: reads the meeting link, then shows the join screen, the meeting or
// an error. It speaks docs/signalling.md on /ws and docs/captions-api.md on /captions.
//
// One module per concern (docs/meeting-page.md): store (the state and its named changes),
// screens, join, connection (join, reconnect, leave), tiles, captionfeed (captions,
// transcript, room caption state), health, host, toolbar.

import { captionOverlay, startCaptions, transcript } from "./captionfeed.js";
import { connect } from "./connection.js";
import { $, role } from "./dom.js";
import { bindHealth } from "./health.js";
import { bindHost } from "./host.js";
import { detectLanguage, language, onLanguageChange, setLanguage } from "./i18n.js";
import { showJoin } from "./join.js";
import { readLink } from "./link.js";
import { bindScreens, showError, showScreen } from "./screens.js";
import { applySettings } from "./settings.js";
import { current, setLink, setPhase } from "./store.js";
import { attachLocal, bindTiles, colours } from "./tiles.js";
import { bindToolbar } from "./toolbar.js";
import { TranscriptPanel } from "./transcript.js";

function boot() {
  setLanguage(detectLanguage(), { save: false });
  applySettings(current().settings);
  $(".lang-switch").addEventListener("click", () => setLanguage(language() === "fr" ? "en" : "fr"));
  bindScreens();
  const link = readLink();
  if (link.error) {
    // A token that cannot be used is still kept, so "Try again" reloads the same link.
    setLink(link.token ? { token: link.token, grants: null, room: "" } : null);
    showError(link.error);
    return;
  }
  setLink(link);
  setPhase("join");
  showJoin({ connect, enter: enterMeeting });
}

function enterMeeting() {
  const { link } = current();
  setPhase("meeting");
  showScreen("meeting");
  captionOverlay();
  bindTiles();
  attachLocal();
  const panel = new TranscriptPanel(role("transcript"), transcript, { colours, room: link.room });
  onLanguageChange(() => panel.render());
  bindToolbar();
  bindHealth();
  if (link.grants.role === "host") bindHost();
  startCaptions();
  $("[data-testid=captions-toggle]").focus();
}

boot();
