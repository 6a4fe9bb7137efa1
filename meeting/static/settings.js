// Per-viewer caption settings, kept in localStorage so each viewer finds their own choice
// again. Applying them only sets data attributes and CSS variables on the document root;
// styles.css does the rest.

import { storageGet, storageSet } from "./i18n.js";

const STORAGE_KEY = "captions.viewer-settings";

export const CHOICES = {
  size: ["S", "M", "L", "XL"],
  preset: ["white-on-black", "yellow-on-black", "black-on-white"],
  position: ["bottom", "top"],
  // Below 0.5 the text over moving video no longer keeps WCAG AA contrast.
  opacity: ["1", "0.85", "0.7", "0.5"],
};

export const DEFAULTS = {
  size: "M",
  preset: "white-on-black",
  position: "bottom",
  opacity: "0.85",
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
  root.style.setProperty("--caption-bg-opacity", settings.opacity);
}

/** Wires the settings form: every radio group named after a setting saves and applies at once. */
export function bindSettingsForm(form, settings, onChange = () => {}) {
  for (const key of Object.keys(CHOICES)) {
    for (const input of form.querySelectorAll(`input[name="${key}"]`)) {
      input.checked = input.value === settings[key];
      input.addEventListener("change", () => {
        if (!input.checked) return;
        settings[key] = input.value;
        saveSettings(settings);
        applySettings(settings);
        onChange(settings);
      });
    }
  }
}
