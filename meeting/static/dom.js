// Small DOM helpers shared by the page's modules.

export const $ = (selector, root = document) => root.querySelector(selector);
export const role = (name, root = document) => root.querySelector(`[data-role="${name}"]`);
