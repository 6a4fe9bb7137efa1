// The meeting link: the room from /room/{room}, the token from the URL fragment
// (#token=JWT, never sent to the server in a URL). The page reads the token's grants to
// show the right screen; the server verifies the signature.

// Small tolerance for the viewer's clock; the server checks expiry exactly.
const EXPIRY_SKEW_SECONDS = 30;

/** {token, grants, room}, or {error} with an error code for the error screen. */
export function readLink(url = location) {
  const pathRoom = decodeURIComponent((url.pathname.match(/^\/room\/([^/]+)\/?$/) || [])[1] || "");
  const token = new URLSearchParams(url.hash.slice(1)).get("token") || "";
  if (!token) return { error: "token_missing" };
  const grants = decodeGrants(token);
  if (!grants) return { error: "token_invalid", token };
  if (pathRoom && grants.room !== pathRoom) return { error: "wrong_room", token };
  if (grants.exp && grants.exp + EXPIRY_SKEW_SECONDS < Date.now() / 1000) return { error: "token_expired", token };
  return { token, grants, room: pathRoom || grants.room };
}

/** The token's grants (not verified: the server does that), or null if it is not a JWT. */
export function decodeGrants(token) {
  try {
    const part = token.split(".")[1];
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
    const grants = claims.grants;
    if (!grants || typeof grants.room !== "string" || typeof grants.identity !== "string") return null;
    return { ...grants, exp: Number(claims.exp) || 0 };
  } catch {
    return null;
  }
}
