// Per-viewer caption settings, kept in localStorage so each viewer finds their own choice
// again. Applying them only sets data attributes and CSS variables on the document root;
// styles.css does the rest.

import { storageGet, storageSet } from "./i18n.js";

const STORAGE_KEY = "captions.viewer-settings";

export const CHOICES = {
  size: ["S", "M", "L", "XL"],
  preset: ["white-on-black", "yellow-on-black", "black-on-white"],
  position: ["bottom", "top"],
  opacity: ["1", "0.85", "0.7", "0.5"],
  readingSpeed: ["slow", "normal", "fast"], // captions.js READING_SPEEDS
  captionsKey: ["c", "k", "off"], // the single-key shortcut that shows or hides captions
  announce: ["on", "off"], // finals read out by screen readers, visible captions or not
};

/** The least background opacity that keeps every caption colour at WCAG AA over the
 * page behind the caption band (#101418): dark text on a light box loses contrast fast
 * as the dark page shows through (tests/test_browser_page.py computes every combination). */
export const MIN_OPACITY = { "white-on-black": 0.5, "yellow-on-black": 0.5, "black-on-white": 0.85 };

export function effectiveOpacity(settings) {
  return String(Math.max(Number(settings.opacity), MIN_OPACITY[settings.preset] ?? 1));
}

export const DEFAULTS = {
  size: "M",
  preset: "white-on-black",
  position: "bottom",
  opacity: "0.85",
  readingSpeed: "normal",
  captionsKey: "c",
  announce: "on",
  captionsVisible: true,
};

/** Saved settings merged over the defaults; anything unknown or malformed is ignored. */
export function loadSettings() {
  const settings = { ...DEFAULTS };
  let saved = {};
  try {
    saved = JSON.parse(storageGet(STORAGE_KEY) || "{}") || {};
  } catch {
    saved = {};
  }
  for (const [key, options] of Object.entries(CHOICES)) {
    if (options.includes(String(saved[key]))) settings[key] = String(saved[key]);
  }
  if (typeof saved.captionsVisible === "boolean") settings.captionsVisible = saved.captionsVisible;
  return settings;
}

export function saveSettings(settings) {
  storageSet(STORAGE_KEY, JSON.stringify(settings));
}

export function applySettings(settings, root = document.documentElement) {
  root.dataset.captionSize = settings.size;
  root.dataset.captionPreset = settings.preset;
  root.dataset.captionPosition = settings.position;
  root.style.setProperty("--caption-bg-opacity", effectiveOpacity(settings));
}

/** Opacities a preset cannot keep readable are disabled in the form (and clamped). */
function refreshOpacityChoices(form, settings) {
  const min = MIN_OPACITY[settings.preset] ?? 1;
  for (const input of form.querySelectorAll('input[name="opacity"]')) {
    input.disabled = Number(input.value) < min;
    input.checked = input.value === effectiveOpacity(settings);
  }
}

/** Wires the settings form: every radio group named after a setting calls
 * `choose(key, value)` at once; `settings()` gives the current settings. */
export function bindSettingsForm(form, settings, choose) {
  for (const key of Object.keys(CHOICES)) {
    for (const input of form.querySelectorAll(`input[name="${key}"]`)) {
      input.checked = input.value === settings()[key];
      input.addEventListener("change", () => {
        if (!input.checked) return;
        choose(key, input.value);
        applySettings(settings());
        refreshOpacityChoices(form, settings());
      });
    }
  }
  refreshOpacityChoices(form, settings());
}
