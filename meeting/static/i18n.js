// Interface text in English and French. The language comes from the viewer's saved choice,
// else from the browser's languages; a switch in the header changes it at once.
// Elements carry data-i18n="key" (text), data-i18n-label="key" (aria-label + title) or
// data-i18n-placeholder="key".

export const STRINGS = {
  en: {
    "app.title": "Live captions meeting",
    "skip.main": "Skip to main content",
    "lang.switch": "Français",
    "lang.switch.label": "Passer l'interface en français",
    "join.heading": "Join the meeting",
    "join.room": "Room: {room}",
    "join.name": "Your name",
    "join.name_from_link": "Your name comes from your meeting link.",
    "join.mic": "Microphone",
    "join.camera": "Camera",
    "join.no_camera": "No camera",
    "join.no_mic": "No microphone (listen only)",
    "join.preview": "Camera preview",
    "join.preview_off": "Camera off",
    "join.level": "Microphone level",
    "join.button": "Join",
    "join.joining": "Joining…",
    "join.role.host": "You join as host.",
    "join.role.participant": "You join as participant.",
    "join.role.guest": "You join as a guest: guests listen and read the captions only (no microphone or camera).",
    "join.listen_only": "You listen and read the captions only (no microphone or camera).",
    "join.name_required": "Please enter your name.",
    "error.heading": "Cannot join",
    "error.retry": "Try again",
    "error.no_token": "This page needs a meeting link. Ask the host for your join link.",
    "error.expired": "This meeting link has expired. Ask the host for a new link.",
    "error.invalid": "This meeting link is not valid. Check that you copied all of it, or ask the host for a new link.",
    "error.wrong_room": "This link is for another room. Ask the host for the link to this room.",
    "error.forbidden": "You are not allowed to do that.",
    "error.room_full": "This meeting is full.",
    "error.mic_denied": "Microphone access was denied. Allow the microphone in your browser's site settings, or join without a microphone.",
    "error.mic_missing": "No microphone was found. You can join without one.",
    "error.media_failed": "Your camera or microphone could not be started.",
    "error.connection_lost": "Connection lost. Trying to reconnect…",
    "error.connection_failed": "Could not connect to the meeting server.",
    "error.media_blocked": "Audio and video cannot get through your network: a firewall may be blocking UDP. Try another network, or ask your IT team to allow it.",
    "error.reconnected": "Reconnected.",
    "captions_only.message": "Audio and video cannot get through this network (a firewall may be blocking UDP): you cannot hear or see the others, nor they you. Captions continue.",
    "captions_only.retrying": "Trying audio and video again…",
    "error.replaced": "You joined this meeting from another tab or device, so this page left it.",
    "error.unknown": "Something went wrong: {detail}",
    "meeting.you": "{name} (you)",
    "meeting.muted": "muted",
    "meeting.mute": "Mute",
    "meeting.unmute": "Unmute",
    "meeting.camera_off": "Stop camera",
    "meeting.camera_on": "Start camera",
    "meeting.leave": "Leave",
    "meeting.controls": "Meeting controls",
    "meeting.left": "You left the meeting.",
    "meeting.rejoin": "Join again",
    "meeting.captions": "Captions",
    "meeting.captions_on": "Hide captions (c)",
    "meeting.captions_off": "Show captions (c)",
    "meeting.transcript": "Transcript",
    "meeting.settings": "Caption settings",
    "meeting.settings.label": "Caption settings",
    "meeting.host": "Host controls",
    "meeting.host.label": "Host controls",
    "meeting.participants": "{count} in the meeting",
    "meeting.joined": "{name} joined",
    "meeting.left_room": "{name} left",
    "meeting.speaking": "speaking",
    "captions.by_on": "Captions turned on by {name}",
    "captions.by_off": "Captions turned off by {name}",
    "captions.language_by": "Caption language set to {language} by {name}",
    "captions.unsupported_language":
      "(speaking a language this captioning model cannot transcribe: captions in this language need another model)",
    "captions.language_auto": "Automatic (each speaker's own)",
    "captions.region": "Live captions",
    "captions.log": "Final captions",
    "health.live": "Captions live",
    "health.degraded": "Captions delayed",
    "health.off": "Captions off by host",
    "health.offline": "Captions unavailable",
    "health.connecting": "Captions connecting",
    "saving.failed": "Transcript not being saved",
    "transcript.heading": "Transcript",
    "transcript.search": "Search the transcript",
    "transcript.empty": "Nothing said yet.",
    "transcript.no_match": "No match.",
    "transcript.matches": "{count} matching",
    "transcript.download": "Download",
    "transcript.close": "Close transcript",
    "transcript.server": "Full transcript from the server",
    "settings.heading": "Caption settings",
    "settings.size": "Text size",
    "settings.size.S": "Small",
    "settings.size.M": "Medium",
    "settings.size.L": "Large",
    "settings.size.XL": "Extra large",
    "settings.preset": "Colours",
    "settings.preset.white-on-black": "White on black",
    "settings.preset.yellow-on-black": "Yellow on black",
    "settings.preset.black-on-white": "Black on white",
    "settings.position": "Position",
    "settings.position.bottom": "Bottom",
    "settings.position.top": "Top",
    "settings.opacity": "Background opacity",
    "settings.opacity.note": "Some colours need a more opaque background to stay readable.",
    "settings.reading": "Reading speed",
    "settings.reading.note": "How long finished captions stay on screen.",
    "settings.reading.slow": "Slow (120 words a minute)",
    "settings.reading.normal": "Normal (180 words a minute)",
    "settings.reading.fast": "Fast (240 words a minute)",
    "settings.key": "Key to show or hide captions",
    "settings.key.off": "No key",
    "settings.announce": "Screen reader",
    "settings.announce.on": "Read finished captions aloud",
    "settings.announce.off": "Do not read captions aloud",
    "settings.close": "Close",
    "host.heading": "Host controls",
    "host.room_captions": "Captions for everyone",
    "host.room_captions": "Captions for everyone",
    "host.language": "Spoken language",
    "host.download": "Download the transcript",
    "host.close": "Close",
  },
  fr: {
    "app.title": "Réunion sous-titrée en direct",
    "skip.main": "Aller au contenu principal",
    "lang.switch": "English",
    "lang.switch.label": "Switch the interface to English",
    "join.heading": "Rejoindre la réunion",
    "join.room": "Salle : {room}",
    "join.name": "Votre nom",
    "join.name_from_link": "Votre nom vient de votre lien de réunion.",
    "join.mic": "Micro",
    "join.camera": "Caméra",
    "join.no_camera": "Pas de caméra",
    "join.no_mic": "Pas de micro (écoute seule)",
    "join.preview": "Aperçu de la caméra",
    "join.preview_off": "Caméra coupée",
    "join.level": "Niveau du micro",
    "join.button": "Rejoindre",
    "join.joining": "Connexion…",
    "join.role.host": "Vous rejoignez en tant qu'organisateur.",
    "join.role.participant": "Vous rejoignez en tant que participant.",
    "join.role.guest": "Vous rejoignez en tant qu'invité : les invités écoutent et lisent les sous-titres uniquement (sans micro ni caméra).",
    "join.listen_only": "Vous écoutez et lisez les sous-titres uniquement (sans micro ni caméra).",
    "join.name_required": "Veuillez saisir votre nom.",
    "error.heading": "Impossible de rejoindre",
    "error.retry": "Réessayer",
    "error.no_token": "Cette page a besoin d'un lien de réunion. Demandez votre lien à l'organisateur.",
    "error.expired": "Ce lien de réunion a expiré. Demandez un nouveau lien à l'organisateur.",
    "error.invalid": "Ce lien de réunion n'est pas valide. Vérifiez qu'il est complet, ou demandez un nouveau lien à l'organisateur.",
    "error.wrong_room": "Ce lien est celui d'une autre salle. Demandez le lien de cette salle à l'organisateur.",
    "error.forbidden": "Vous n'avez pas le droit de faire cela.",
    "error.room_full": "Cette réunion est complète.",
    "error.mic_denied": "L'accès au micro a été refusé. Autorisez le micro dans les réglages du site de votre navigateur, ou rejoignez sans micro.",
    "error.mic_missing": "Aucun micro trouvé. Vous pouvez rejoindre sans micro.",
    "error.media_failed": "La caméra ou le micro n'a pas pu démarrer.",
    "error.connection_lost": "Connexion perdue. Reconnexion en cours…",
    "error.connection_failed": "Impossible de joindre le serveur de la réunion.",
    "error.media_blocked": "Le son et la vidéo ne passent pas sur votre réseau : un pare-feu bloque peut-être l'UDP. Essayez un autre réseau, ou demandez à votre service informatique de l'autoriser.",
    "error.reconnected": "Reconnecté.",
    "captions_only.message": "Le son et la vidéo ne passent pas sur ce réseau (un pare-feu bloque peut-être l'UDP) : vous ne voyez ni n'entendez les autres, et eux non plus. Les sous-titres continuent.",
    "captions_only.retrying": "Nouvel essai du son et de la vidéo…",
    "error.replaced": "Vous avez rejoint cette réunion depuis un autre onglet ou appareil ; cette page l'a donc quittée.",
    "error.unknown": "Une erreur est survenue : {detail}",
    "meeting.you": "{name} (vous)",
    "meeting.muted": "micro coupé",
    "meeting.mute": "Couper le micro",
    "meeting.unmute": "Activer le micro",
    "meeting.camera_off": "Couper la caméra",
    "meeting.camera_on": "Activer la caméra",
    "meeting.leave": "Quitter",
    "meeting.controls": "Commandes de la réunion",
    "meeting.left": "Vous avez quitté la réunion.",
    "meeting.rejoin": "Rejoindre à nouveau",
    "meeting.captions": "Sous-titres",
    "meeting.captions_on": "Masquer les sous-titres (c)",
    "meeting.captions_off": "Afficher les sous-titres (c)",
    "meeting.transcript": "Transcription",
    // Short visible words so the toolbar keeps one row at 1280 px; the full name is the
    // button's accessible name and tooltip, and contains the visible words (label in name).
    "meeting.settings": "Réglages",
    "meeting.settings.label": "Réglages des sous-titres",
    "meeting.host": "Organisateur",
    "meeting.host.label": "Contrôles de l'organisateur",
    "meeting.participants": "{count} dans la réunion",
    "meeting.joined": "{name} a rejoint",
    "meeting.left_room": "{name} est parti",
    "meeting.speaking": "parle",
    "captions.by_on": "Sous-titres activés par {name}",
    "captions.by_off": "Sous-titres désactivés par {name}",
    "captions.language_by": "Langue des sous-titres : {language}, choisie par {name}",
    "captions.unsupported_language":
      "(parle une langue que ce modèle de sous-titrage ne sait pas transcrire : il faut un autre modèle pour sous-titrer cette langue)",
    "captions.language_auto": "Automatique (la langue de chacun)",
    "captions.region": "Sous-titres en direct",
    "captions.log": "Sous-titres définitifs",
    "health.live": "Sous-titres en direct",
    "health.degraded": "Sous-titres en retard",
    "health.off": "Sous-titres coupés par l'organisateur",
    "health.offline": "Sous-titres indisponibles",
    "health.connecting": "Connexion des sous-titres",
    "saving.failed": "Transcription non enregistrée",
    "transcript.heading": "Transcription",
    "transcript.search": "Rechercher dans la transcription",
    "transcript.empty": "Rien n'a encore été dit.",
    "transcript.no_match": "Aucun résultat.",
    "transcript.matches": "{count} résultat(s)",
    "transcript.download": "Télécharger",
    "transcript.close": "Fermer la transcription",
    "transcript.server": "Transcription complète depuis le serveur",
    "settings.heading": "Réglages des sous-titres",
    "settings.size": "Taille du texte",
    "settings.size.S": "Petite",
    "settings.size.M": "Moyenne",
    "settings.size.L": "Grande",
    "settings.size.XL": "Très grande",
    "settings.preset": "Couleurs",
    "settings.preset.white-on-black": "Blanc sur noir",
    "settings.preset.yellow-on-black": "Jaune sur noir",
    "settings.preset.black-on-white": "Noir sur blanc",
    "settings.position": "Position",
    "settings.position.bottom": "En bas",
    "settings.position.top": "En haut",
    "settings.opacity": "Opacité du fond",
    "settings.opacity.note": "Certaines couleurs ont besoin d'un fond plus opaque pour rester lisibles.",
    "settings.reading": "Vitesse de lecture",
    "settings.reading.note": "Durée d'affichage des sous-titres terminés.",
    "settings.reading.slow": "Lente (120 mots par minute)",
    "settings.reading.normal": "Normale (180 mots par minute)",
    "settings.reading.fast": "Rapide (240 mots par minute)",
    "settings.key": "Touche pour afficher ou masquer les sous-titres",
    "settings.key.off": "Aucune touche",
    "settings.announce": "Lecteur d'écran",
    "settings.announce.on": "Lire à voix haute les sous-titres terminés",
    "settings.announce.off": "Ne pas lire les sous-titres à voix haute",
    "settings.close": "Fermer",
    "host.heading": "Contrôles de l'organisateur",
    "host.room_captions": "Sous-titres pour tous",
    "host.room_captions": "Sous-titres pour tous",
    "host.language": "Langue parlée",
    "host.download": "Télécharger la transcription",
    "host.close": "Fermer",
  },
};

export const LANGUAGES = Object.keys(STRINGS);
const STORAGE_KEY = "captions.ui-language";
let current = "en";
const listeners = new Set();

/** The interface language: the saved choice, else the first supported browser language. */
export function detectLanguage(preferred = navigator.languages || [navigator.language]) {
  const saved = safeGet(STORAGE_KEY);
  if (saved && STRINGS[saved]) return saved;
  for (const tag of preferred) {
    const base = String(tag || "").toLowerCase().split("-")[0];
    if (STRINGS[base]) return base;
  }
  return "en";
}

export function language() {
  return current;
}

export function t(key, params = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : `{${name}}`));
}

export function setLanguage(lang, { save = true } = {}) {
  if (!STRINGS[lang]) return;
  current = lang;
  if (save) safeSet(STORAGE_KEY, lang);
  document.documentElement.lang = lang;
  translate(document);
  for (const listener of listeners) listener(lang);
}

export function onLanguageChange(listener) {
  listeners.add(listener);
}

/** Fills every element marked with data-i18n* under root. */
export function translate(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
    el.title = t(el.dataset.i18nLabel);
  }
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  document.title = t("app.title");
}

function safeGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function safeSet(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // Private mode or storage disabled: the choice lasts for this page only.
  }
}

export { safeGet as storageGet, safeSet as storageSet };
