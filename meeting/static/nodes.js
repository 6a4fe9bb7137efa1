// Which node of a cluster holds the room (docs/scaling.md). Asked of the entry point
// before every (re)connection of /ws and /captions, so that after a node's death the
// page follows the room to the node it moved to; the answer becomes `?node=<id>`, which
// the entry point (HAProxy) routes on. A single server has no room directory (404): no
// routing parameter at all.

// A 503 (the room's node just died and no live node is known yet, or the directory is
// warming up after a restart) is asked again for up to RETRY_MS before giving up.
const RETRY_MS = 15000;
const RETRY_STEP_MS = 500;

export async function nodeQuery(room, token) {
  const deadline = Date.now() + RETRY_MS;
  let response;
  for (;;) {
    response = await fetch(`/rooms/${encodeURIComponent(room)}/node`, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
    if (response.status !== 503 || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, RETRY_STEP_MS));
  }
  if (response.status === 404) return "";
  if (!response.ok) {
    const error = new Error(`no node answers for this room (HTTP ${response.status})`);
    error.code = "connection_failed";
    throw error;
  }
  const answer = await response.json();
  return `?node=${encodeURIComponent(answer.node)}`;
}
