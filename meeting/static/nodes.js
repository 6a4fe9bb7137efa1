// Which node of a cluster holds the room (docs/scaling.md). Asked of the entry point
// before every (re)connection of /ws and /captions, so that after a node's death the
// page follows the room to the node it moved to; the answer becomes `?node=<id>`, which
// the entry point (HAProxy) routes on. A single server has no room directory (404): no
// routing parameter at all.

export async function nodeQuery(room, token) {
  const response = await fetch(`/rooms/${encodeURIComponent(room)}/node`, {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
  });
  if (response.status === 404) return "";
  if (!response.ok) {
    const error = new Error(`no node answers for this room (HTTP ${response.status})`);
    error.code = "connection_failed";
    throw error;
  }
  const answer = await response.json();
  return `?node=${encodeURIComponent(answer.node)}`;
}
